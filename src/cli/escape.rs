//! Lexing of `-o` strings and LOWER lists: where an element ends and what a backslash or a
//! double quote means. Pure functions on bytes (paths are never lossily converted); the meaning
//! of each element is `options`'s business.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// Cuts an `-o` string into `key[=value]` elements at commas outside double quotes and not
/// escaped. Quotes are removed; a `:` or `,` inside them comes out escaped so it stays literal
/// when the value is later split or unescaped. Other escapes are kept for the value parsers.
pub fn split_options(s: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let (mut items, mut cur) = (Vec::new(), Vec::new());
    let mut quoted = false;
    let mut bytes = s.iter().copied();
    while let Some(b) = bytes.next() {
        match b {
            b'\\' => cur.extend(std::iter::once(b).chain(bytes.next())),
            b'"' => quoted = !quoted,
            b',' | b':' if quoted => cur.extend([b'\\', b]),
            b',' => items.push(std::mem::take(&mut cur)),
            _ => cur.push(b),
        }
    }
    if quoted {
        return Err("unterminated double quote in -o options".into());
    }
    items.push(cur);
    items.retain(|i| !i.is_empty());
    Ok(items)
}

/// Removes one level of backslash escapes; a trailing lone backslash stays.
pub fn unescape(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut bytes = v.iter().copied();
    while let Some(b) = bytes.next() {
        out.push(if b == b'\\' {
            bytes.next().unwrap_or(b)
        } else {
            b
        });
    }
    out
}

/// Splits at unescaped `sep` and unescapes each piece, skipping empty ones (fuse-overlayfs
/// tolerates `a::b` and a trailing colon in lowerdir the same way).
pub fn split_unescaped(v: &[u8], sep: u8) -> Vec<PathBuf> {
    let (mut pieces, mut cur) = (Vec::new(), Vec::new());
    let mut bytes = v.iter().copied();
    while let Some(b) = bytes.next() {
        match b {
            b'\\' => cur.push(bytes.next().unwrap_or(b)),
            _ if b == sep => pieces.push(std::mem::take(&mut cur)),
            _ => cur.push(b),
        }
    }
    pieces.push(cur);
    pieces.retain(|p| !p.is_empty());
    pieces
        .into_iter()
        .map(|p| PathBuf::from(OsString::from_vec(p)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    fn items(s: &str) -> Vec<String> {
        let v = split_options(s.as_bytes()).unwrap();
        v.into_iter()
            .map(|i| String::from_utf8(i).unwrap())
            .collect()
    }

    #[test]
    fn split_tolerates_empty_elements_and_quotes() {
        assert_eq!(items("a=1,,b=2,"), ["a=1", "b=2"]);
        assert_eq!(items(",,"), Vec::<String>::new());
        assert_eq!(items(r#"context="a:b,c",x"#), [r"context=a\:b\,c", "x"]);
        assert_eq!(items(r"lowerdir=a\,b:c"), [r"lowerdir=a\,b:c"]);
        assert!(split_options(br#"context="a,b"#).is_err());
    }

    #[test]
    fn lowers_split_at_unescaped_colons() {
        assert_eq!(split_unescaped(b"a:b::c:", b':'), [p("a"), p("b"), p("c")]);
        assert_eq!(
            split_unescaped(br"a\:b:c\\d\", b':'),
            [p("a:b"), p(r"c\d\")]
        );
        assert!(split_unescaped(b"::", b':').is_empty());
    }
}
