//! One `-o` element's value, read as the type its key wants (a 0/1 flag, a number, a duration,
//! a directory, a word), with the error messages that name the option.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::time::Duration;

use super::escape::unescape;
use super::usage;
use crate::error::SetupError;

/// One `-o` element: its key and its value with escapes still in place.
#[derive(Clone, Copy)]
pub(super) struct Opt<'a> {
    pub(super) key: &'a str,
    pub(super) raw: Option<&'a [u8]>,
}

impl<'a> Opt<'a> {
    pub(super) fn new(key: &'a str, raw: &'a [u8]) -> Self {
        Opt {
            key,
            raw: Some(raw),
        }
    }

    pub(super) fn bad(self, why: impl std::fmt::Display) -> SetupError {
        usage(format!("option '{}': {why}", self.key))
    }

    /// The value, unescaped, as UTF-8 text (numbers, words); required.
    pub(super) fn text(self) -> Result<String, SetupError> {
        let raw = self.raw.ok_or_else(|| self.bad("needs a value"))?;
        String::from_utf8(unescape(raw)).map_err(|_| self.bad("value is not UTF-8"))
    }

    /// An optional `0`/`1`; no value means 1.
    pub(super) fn flag(self) -> Result<bool, SetupError> {
        match self.raw.map(|_| self.text()).transpose()?.as_deref() {
            None | Some("1") => Ok(true),
            Some("0") => Ok(false),
            Some(v) => Err(self.bad(format!("expected 0 or 1, got '{v}'"))),
        }
    }

    /// `on`/`off` (or `1`/`0`); no value means on.
    pub(super) fn on_off(self) -> Result<bool, SetupError> {
        match self.raw.map(|_| self.text()).transpose()?.as_deref() {
            None | Some("on" | "1") => Ok(true),
            Some("off" | "0") => Ok(false),
            Some(v) => Err(self.bad(format!("expected on or off, got '{v}'"))),
        }
    }

    pub(super) fn number<T: std::str::FromStr>(self) -> Result<T, SetupError> {
        let v = self.text()?;
        v.parse()
            .map_err(|_| self.bad(format!("'{v}' is not a valid number")))
    }

    pub(super) fn threads(self) -> Result<usize, SetupError> {
        match self.number()? {
            n @ 1..=1024 => Ok(n),
            n => Err(self.bad(format!("{n} threads (1 to 1024)"))),
        }
    }

    pub(super) fn seconds(self) -> Result<Duration, SetupError> {
        let secs: f64 = self.number()?;
        Duration::try_from_secs_f64(secs).map_err(|_| self.bad(format!("{secs} seconds")))
    }

    /// A directory: unescaped bytes, non-empty.
    pub(super) fn path(self) -> Result<PathBuf, SetupError> {
        match self.raw.map(unescape) {
            Some(v) if !v.is_empty() => Ok(PathBuf::from(OsString::from_vec(v))),
            _ => Err(self.bad("needs a directory")),
        }
    }

    /// A value that ends up inside the kernel's comma-separated mount data.
    pub(super) fn word(self) -> Result<String, SetupError> {
        let v = self.text()?;
        if v.is_empty() || v.contains(',') || v.chars().any(char::is_whitespace) {
            return Err(self.bad(format!("'{v}' must be one word without commas")));
        }
        Ok(v)
    }
}
