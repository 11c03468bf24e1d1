//! The whole parser, from argv to an unvalidated `Invocation`: both grammars, every known
//! option and the warnings (random input is thrown at it by tests/hostile.rs).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::args::Args;
use super::invocation::build;
use super::options::{OptState, apply_option_string};
use super::{Invocation, usage};
use crate::config::{CopyUpSync, WhiteoutFormat, XattrPermissions};
use crate::error::SetupError;

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

fn build_from(args: &[&str], is_root: bool) -> Result<Invocation, SetupError> {
    let args = Args::try_parse_from(std::iter::once("unionfs-rs").chain(args.iter().copied()))
        .map_err(|e| usage(e.to_string()))?;
    build(args, is_root)
}

#[test]
fn podman_option_strings() {
    let data = "lowerdir=l/S3:l/S2:l/S1,upperdir=C/diff,workdir=C/work,,volatile,\
                context=\"system_u:object_r:container_file_t:s0:c1,c2\",\
                uidmapping=:0:1:1001:1001:0:1:1002:1002:64535,gidmapping=:0:1:1001,";
    let inv = build_from(&["-o", data, "merged"], false).unwrap();
    let c = &inv.config;
    assert_eq!(c.layers.lowers, [p("l/S3"), p("l/S2"), p("l/S1")]);
    assert_eq!(c.layers.upper, Some(p("C/diff")));
    assert_eq!(c.layers.workdir, Some(p("C/work")));
    assert_eq!(c.mountpoint, p("merged"));
    assert_eq!(c.fs.copy_up_sync, CopyUpSync::Off);
    assert_eq!(c.fs.uid_mappings.len(), 3);
    assert_eq!(c.fs.gid_mappings.len(), 1);
    assert_eq!(
        c.ignored_options,
        ["context=system_u:object_r:container_file_t:s0:c1,c2"]
    );
    assert!(!c.foreground && !c.fuse.read_only);
    assert_eq!(inv.warnings.len(), 1, "{:?}", inv.warnings);
}

#[test]
fn mapping_ranges_may_be_separated_by_commas() {
    let o = "lowerdir=l,uidmapping=0:1000:1,1:100000:65536,gidmapping=0:1000:1,1:2:3,4:5:6";
    let inv = build_from(&["-o", o, "m"], false).unwrap();
    assert_eq!(inv.config.fs.uid_mappings.len(), 2);
    assert_eq!(inv.config.fs.gid_mappings.len(), 3);
    assert!(inv.warnings.is_empty(), "{:?}", inv.warnings);
    let stray = build_from(&["-o", "lowerdir=l,1:2:3", "m"], false).unwrap();
    assert_eq!(stray.warnings.len(), 1);
    assert!(build_from(&["-o", "lowerdir=l,uidmapping=0:1:1,0:5:1", "m"], false).is_err());
}

#[test]
fn read_only_union_and_merging() {
    let inv = build_from(
        &["-o", "lowerdir=a:b", "-o", "workdir=w,allow_root", "m"],
        true,
    )
    .unwrap();
    let c = &inv.config;
    assert!(c.fuse.read_only && c.layers.upper.is_none() && c.layers.workdir.is_none());
    assert!(c.fuse.allow_root && !c.fuse.allow_other);
    assert_eq!(c.fuse.flags, ["suid"]);
    assert!(inv.warnings.iter().any(|w| w.contains("workdir")));
}

#[test]
fn positional_grammar() {
    let inv = build_from(&["-f", "--workdir", "w", r"l1:l\:2", "u", "m"], false).unwrap();
    let c = &inv.config;
    assert_eq!(c.layers.lowers, [p("l1"), p("l:2")]);
    assert_eq!(
        (c.layers.upper.clone(), c.layers.workdir.clone()),
        (Some(p("u")), Some(p("w")))
    );
    assert!(c.foreground && !c.fuse.allow_other && c.fuse.flags.is_empty());
    assert!(
        build_from(&["-d", "l", "u", "m"], false)
            .unwrap()
            .config
            .foreground
    );
    for bad in [&["m"][..], &["l", "m"], &["l", "u", "m", "x"], &[]] {
        assert!(build_from(bad, false).is_err(), "{bad:?}");
    }
    assert!(build_from(&["-o", "lowerdir=l", "u", "m"], false).is_err());
    assert!(build_from(&["-o", "workdir=w", "--workdir", "w", "l", "u", "m"], false).is_err());
}

#[test]
fn every_known_option() {
    let o = "fsync=1,volatile,timeout=2.5,noxattrs=1,static_nlink,ino32_t,writeback=1,threads=7,\
             passthrough=off,whiteout=oci,squash_to_root,squash_to_uid=5,xattr_permissions=2,noacl,redirect_dir=off,\
             allow_other,default_permissions,suid,nosuid,dev,noexec,exec,noatime,relatime,sync,\
             dirsync,ro,fsname=f,subtype=s,lowerdir=l";
    let inv = build_from(&["-o", o, "m"], false).unwrap();
    let (fs, fuse) = (&inv.config.fs, &inv.config.fuse);
    assert!(
        fs.copy_up_sync == CopyUpSync::Off
            && !fs.xattrs
            && fs.static_nlink
            && fs.ino32
            && !fs.posix_acl
    );
    assert_eq!(fs.timeout, Duration::from_millis(2500));
    assert_eq!(fs.whiteout, WhiteoutFormat::Oci);
    assert_eq!((fs.squash_uid, fs.squash_gid), (Some(5), Some(0)));
    assert_eq!(fs.xattr_permissions, XattrPermissions::Containers);
    assert!(fuse.writeback && fuse.allow_other && fuse.default_permissions && fuse.read_only);
    assert!(!fuse.passthrough);
    assert_eq!(fuse.threads, 7);
    assert_eq!(
        fuse.flags,
        ["nosuid", "dev", "exec", "noatime", "sync", "dirsync"]
    );
    assert_eq!((fuse.fsname.as_str(), fuse.subtype.as_str()), ("f", "s"));
    assert!(inv.warnings.is_empty(), "{:?}", inv.warnings);
}

#[test]
fn unknown_options_warn_once_and_bad_values_fail() {
    let inv = build_from(&["-o", "lowerdir=l,foo,bar=1,redirect_dir=on", "m"], false).unwrap();
    assert_eq!(inv.warnings.len(), 2);
    assert!(inv.warnings[0].contains("foo, bar=1"));
    for bad in [
        "threads=0",
        "timeout=x",
        "timeout=-1",
        "fsync=2",
        "whiteout=x",
        "uidmapping=1:2",
        "xattr_permissions=3",
        "squash_to_uid=-1",
        "upperdir=",
        "lowerdir=::",
        "suid=1",
        "timeout",
        r"subtype=a\,b",
        "fsname=",
    ] {
        let o = format!("lowerdir=l,{bad}");
        assert!(build_from(&["-o", &o, "m"], false).is_err(), "{bad}");
    }
}

#[test]
fn copy_up_sync_ways() {
    let parse = |o: &str| {
        let mut st = OptState::default();
        apply_option_string(&mut st, o.as_bytes()).map(|()| st.config.fs.copy_up_sync)
    };
    assert_eq!(parse("timeout=1").unwrap(), CopyUpSync::Background);
    assert_eq!(parse("copy_up_sync=inline").unwrap(), CopyUpSync::Inline);
    assert_eq!(
        parse("copy_up_sync=inline,fsync=1").unwrap(),
        CopyUpSync::Inline
    );
    assert_eq!(
        parse("copy_up_sync=inline,volatile").unwrap(),
        CopyUpSync::Off
    );
    assert_eq!(parse("volatile,fsync=1").unwrap(), CopyUpSync::Background);
    assert!(parse("copy_up_sync=later").is_err());
}
