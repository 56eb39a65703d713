//! `just migrate-new NAME` on a copy of this crate's real source: the new file and its
//! registration in lib.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should abort the test

use std::path::{Path, PathBuf};

use migration::scaffold::{Date, ScaffoldError, new_migration};

/// A private copy of `migration/src` in a fresh temporary folder (deleted when dropped).
fn copy_of_source() -> tempfile::TempDir {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
        }
    }
    copy
}

#[test]
fn a_new_migration_is_written_and_registered_last() {
    let copy = copy_of_source();
    let dir = copy.path();
    // On the day of the last migration, so the new one takes that day's next number.
    let migrations = migration::migrations();
    let last = migrations.last().unwrap().name().to_owned();
    let date = Date {
        year: last[1..5].parse().unwrap(),
        month: last[5..7].parse().unwrap(),
        day: last[7..9].parse().unwrap(),
    };
    let number: u32 = last[10..16].parse().unwrap();
    let expected = format!("{}{:06}_add_sessions", &last[..10], number + 1);
    let path = new_migration(dir, "add_sessions", date).unwrap();
    assert_eq!(
        path.file_name().unwrap().to_str().unwrap(),
        format!("{expected}.rs")
    );
    let file = std::fs::read_to_string(&path).unwrap();
    assert!(file.contains(&format!(r#""{expected}""#)), "{file}");
    assert!(file.contains("impl MigrationTrait for Migration"), "{file}");

    let lib = std::fs::read_to_string(dir.join("lib.rs")).unwrap();
    assert!(
        lib.contains(&format!("mod {last};\nmod {expected};\n")),
        "{lib}"
    );
    assert!(
        lib.contains(&format!(
            "        migration_file!({last}),\n        migration_file!({expected}),\n    ]"
        )),
        "{lib}"
    );

    // A second one the same day takes the next number; nothing is overwritten.
    let next = new_migration(dir, "add_sessions", date).unwrap();
    assert_eq!(
        next.file_name().unwrap().to_str().unwrap(),
        format!("{}{:06}_add_sessions.rs", &last[..10], number + 2)
    );
}

/// The new migration's files in `dir`.
fn files_named(dir: &Path, name: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|file| file.contains(name))
        .collect()
}

/// Plants something (`plant`) where lib.rs's new content is written first, then checks that a new
/// migration fails naming that path and leaves nothing half-done: lib.rs as it was, and no
/// migration file that nothing registers. Returns the path.
fn refused_with(dir: &Path, plant: impl FnOnce(&Path)) -> PathBuf {
    let lib = std::fs::read_to_string(dir.join("lib.rs")).unwrap();
    let in_the_way = migration::scaffold::replacement_of(&dir.join("lib.rs"));
    plant(&in_the_way);
    let outcome = new_migration(dir, "add_sessions", Date::today());
    assert!(
        matches!(&outcome, Err(ScaffoldError::Io { path, .. }) if *path == in_the_way),
        "{outcome:?}"
    );
    assert_eq!(std::fs::read_to_string(dir.join("lib.rs")).unwrap(), lib);
    assert_eq!(files_named(dir, "add_sessions"), Vec::<String>::new());
    in_the_way
}

/// When lib.rs cannot be rewritten (here a folder is in the way of the file its new content is
/// written to first, which no mode lets even root write), nothing is left half-done.
#[test]
fn a_lib_rs_that_cannot_be_written_leaves_no_migration_behind() {
    let copy = copy_of_source();
    refused_with(copy.path(), |in_the_way| {
        std::fs::create_dir(in_the_way).unwrap();
    });
}

/// A symlink planted where lib.rs's new content is written first is never written through (its
/// target stays as it was, and nothing is registered); with nothing in the way, lib.rs keeps its
/// permissions.
#[cfg(unix)]
#[test]
fn lib_rs_is_never_written_through_a_planted_symlink_and_keeps_its_mode() {
    use std::os::unix::fs::PermissionsExt as _;
    let copy = copy_of_source();
    let dir = copy.path();
    let elsewhere = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(elsewhere.path(), "not lib.rs\n").unwrap();
    let in_the_way = refused_with(dir, |in_the_way| {
        std::os::unix::fs::symlink(elsewhere.path(), in_the_way).unwrap();
    });
    assert_eq!(
        std::fs::read_to_string(elsewhere.path()).unwrap(),
        "not lib.rs\n"
    );

    std::fs::remove_file(&in_the_way).unwrap();
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    std::fs::set_permissions(dir.join("lib.rs"), std::fs::Permissions::from_mode(0o640)).unwrap();
    new_migration(dir, "add_sessions", Date::today()).unwrap();
    assert_eq!(mode(&dir.join("lib.rs")), 0o640);
    assert!(!in_the_way.exists());
}

#[test]
fn a_lib_rs_of_another_shape_is_left_alone() {
    let copy = copy_of_source();
    let dir = copy.path();
    std::fs::write(dir.join("lib.rs"), "// nothing to anchor on\n").unwrap();
    let outcome = new_migration(dir, "add_sessions", Date::today());
    assert!(
        matches!(outcome, Err(ScaffoldError::UnexpectedLib(_))),
        "{outcome:?}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("lib.rs")).unwrap(),
        "// nothing to anchor on\n"
    );
    assert_eq!(files_named(dir, "add_sessions"), Vec::<String>::new());
}
