//! Command line parsing (placeholder).
