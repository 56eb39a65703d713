//! Every recipe of the justfile that takes arguments hands each one to its program verbatim, as
//! one argument, and never to the shell as code: spaces, `;`, `$(...)`, backquotes, `&&`, quotes
//! and globs included. No Docker, no database: a stand-in `cargo` on `PATH` records what it got, and
//! the real `migration` binary refuses a hostile migration name as a name. The same stand-in
//! shows how the recipes select what cargo builds (`--bin`, `--workspace`; by package only
//! `bench`'s release build).
//! Unix only: the recipes' [windows] variants run in cmd.exe.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use counseling_e2e::TempDir;

fn checkout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// An argument that runs commands if a shell ever reads it as code: each would create a file
/// in `dir`.
fn hostile(dir: &Path) -> String {
    let mark = |name: &str| dir.join(name).display().to_string();
    format!(
        "x y; touch {}; $(touch {}) `touch {}` * && touch {}",
        mark("semicolon"),
        mark("dollar"),
        mark("backquote"),
        mark("and")
    )
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `just RECIPE ARGS...` in the checkout, with `path_first` ahead of `PATH`.
fn just(path_first: Option<&Path>, recipe_and_arguments: &[&str]) -> Output {
    let mut path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(dir) = path_first {
        let mut first = dir.as_os_str().to_owned();
        first.push(":");
        first.push(&path);
        path = first;
    }
    Command::new("just")
        .arg("--justfile")
        .arg(checkout().join("justfile"))
        .arg("--working-directory")
        .arg(checkout())
        .args(recipe_and_arguments)
        .env("PATH", path)
        .output()
        .unwrap_or_else(|error| panic!("`just` must be on PATH (see README): {error}"))
}

#[test]
fn every_recipe_with_arguments_passes_them_verbatim_as_one_argument_each() {
    let scratch = TempDir::new("just-arguments");
    let marks = scratch.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    // The stand-in records its arguments, one per NUL-terminated record.
    let bin = scratch.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let recorded = scratch.path().join("cargo-arguments");
    stand_in_cargo(
        &bin,
        &format!("printf '%s\\0' \"$@\" > '{}'", recorded.display()),
    );

    let argument = hostile(&marks);
    let (plain, two_words) = ("--force", "\"two\" 'words'");
    let cases: [(&str, &[&str]); 6] = [
        ("migrate-new", &[&argument]),
        ("migrate-accept", &[&argument]),
        ("migrate-down", &[plain, &argument, two_words]),
        ("migrate-check", &[plain, &argument, two_words]),
        ("migrate-bench", &[plain, &argument, two_words]),
        ("test", &[plain, &argument, two_words]),
    ];
    for (recipe, arguments) in cases {
        let _ = std::fs::remove_file(&recorded);
        let mut command = vec![recipe];
        command.extend_from_slice(arguments);
        let output = just(Some(&bin), &command);
        assert!(
            output.status.success(),
            "just {recipe}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let got = std::fs::read(&recorded).unwrap();
        let got: Vec<String> = got
            .split(|byte| *byte == 0)
            .filter(|record| !record.is_empty())
            .map(|record| String::from_utf8(record.to_vec()).unwrap())
            .collect();
        assert!(
            got.ends_with(&arguments.iter().map(|a| a.to_string()).collect::<Vec<_>>()),
            "just {recipe}: cargo got {got:#?}"
        );
        assert_eq!(
            files_in(&marks),
            Vec::<String>::new(),
            "just {recipe} ran shell code"
        );
    }
}

/// A stand-in `cargo` in `dir` that runs `program` with what follows `--`, as `cargo run` does
/// (without building: a `cargo run` from inside a test would build for half a minute or more).
fn cargo_running(dir: &Path, program: &Path) {
    stand_in_cargo(
        dir,
        &format!(
            "while [ \"$#\" -gt 0 ] && [ \"$1\" != -- ]; do shift; done\nshift\nexec '{}' \"$@\"",
            program.display()
        ),
    );
}

/// An executable `cargo` in `dir` that runs `script` (sh) instead.
fn stand_in_cargo(dir: &Path, script: &str) {
    let stand_in = dir.join("cargo");
    std::fs::write(&stand_in, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn migrate_new_with_a_hostile_name_is_refused_by_the_binary_as_one_name() {
    let migration = counseling_e2e::workspace_binary("migration");
    assert!(
        migration.exists(),
        "{} is missing: cargo build --bin migration",
        migration.display()
    );
    let scratch = TempDir::new("just-migrate-new");
    let (marks, bin) = (scratch.path().join("marks"), scratch.path().join("bin"));
    std::fs::create_dir(&marks).unwrap();
    std::fs::create_dir(&bin).unwrap();
    cargo_running(&bin, &migration);
    let argument = hostile(&marks);
    let sources = files_in(&checkout().join("migration/src"));

    let output = just(Some(&bin), &["migrate-new", &argument]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Bad usage, as every refused argument of the binary's (just passes its code on).
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    // The binary's refusal of the name, not of its command line: it got `new` and one name.
    assert!(
        stderr.contains("a migration name is lower-case snake_case"),
        "{stderr}"
    );
    assert_eq!(
        files_in(&marks),
        Vec::<String>::new(),
        "shell code ran: {stderr}"
    );
    assert_eq!(files_in(&checkout().join("migration/src")), sources);
}

/// Every recipe that builds, runs or tests our code selects it with `--bin` or `--workspace`,
/// never by package (`-p`, `--package`, `--manifest-path`): each package set settles the
/// dependencies' features for itself and rebuilds some sixty of them (see the justfile's header),
/// which cost CI minutes. `bench` alone builds its release binaries by package, on purpose, and
/// then runs one for real: it is left out.
#[test]
fn recipes_select_with_bin_or_workspace_never_a_package() {
    let scratch = TempDir::new("just-selection");
    let bin = scratch.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    // The stand-in appends each call's arguments as a line (none of these holds a newline).
    let recorded = scratch.path().join("cargo-calls");
    let shown = recorded.display();
    stand_in_cargo(
        &bin,
        &format!("printf '%s ' \"$@\" >> '{shown}'\necho >> '{shown}'"),
    );

    // Every recipe of this platform, so that a new one is checked too.
    let summary = just(None, &["--summary"]);
    let summary = String::from_utf8(summary.stdout).unwrap();
    let recipes: Vec<&str> = summary.split_whitespace().collect();
    assert!(
        recipes.contains(&"dev") && recipes.contains(&"migrate-up"),
        "{recipes:?}"
    );
    let is_package = |word: &str| {
        word == "-p"
            || (word.starts_with("-p") && !word.starts_with("--"))
            || word == "--package"
            || word.starts_with("--package=")
            || word == "--manifest-path"
            || word.starts_with("--manifest-path=")
    };
    for recipe in recipes.into_iter().filter(|recipe| *recipe != "bench") {
        let _ = std::fs::remove_file(&recorded);
        let mut command = vec![recipe];
        // A harmless value for a required argument.
        match recipe {
            "migrate-accept" => command.push("v"),
            "migrate-new" => command.push("n"),
            _ => {}
        }
        let output = just(Some(&bin), &command);
        assert!(
            output.status.success(),
            "just {recipe}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let calls = std::fs::read_to_string(&recorded).unwrap_or_default();
        if recipe == "default" {
            assert_eq!(calls, "", "just {recipe}");
            continue;
        }
        assert!(!calls.is_empty(), "just {recipe} ran no cargo");
        for call in calls.lines() {
            // cargo's own options: what comes before `--` (after it, the program's).
            let words: Vec<&str> = call
                .split_whitespace()
                .take_while(|word| *word != "--")
                .collect();
            let has = |flag: &str| {
                words
                    .iter()
                    .any(|word| *word == flag || word.starts_with(&format!("{flag}=")))
            };
            assert!(
                !words.iter().any(|word| is_package(word)),
                "just {recipe} selects by package: cargo {call}"
            );
            match words.first().copied() {
                Some("run" | "build") => assert!(has("--bin"), "just {recipe}: cargo {call}"),
                Some("test" | "bench") => {
                    assert!(has("--workspace"), "just {recipe}: cargo {call}")
                }
                Some("fmt" | "clippy" | "deny") => {}
                _ => panic!("just {recipe}: unexpected cargo {call}"),
            }
        }
    }
}
