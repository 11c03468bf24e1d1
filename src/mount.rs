//! Mounting and serving (placeholder).
