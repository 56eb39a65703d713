//! Which TLS setting wins, and libpq's rules for what the winners mean together.
//!
//! Precedence, highest first: the overrides (`DATABASE_SSL_MODE`, `DATABASE_SSL_ROOT_CERT`), the
//! URL's parameters, libpq's environment variables (`PGSSLMODE`, ...; [`crate::libpq`] has
//! already let the URL win over those), libpq's default. An override may strengthen what the URL
//! or the environment asks for, never weaken it silently: a weaker `DATABASE_SSL_MODE`, or a
//! `DATABASE_SSL_ROOT_CERT` naming another CA, is refused.

use std::path::PathBuf;

use super::files::{read_ca_file, read_certificate_file, read_key_file};
use super::{SslMode, SslRootCert, TlsProblem, TlsSettings, TlsSource};

/// The override of `sslmode`.
pub(crate) const MODE_OVERRIDE: &str = "DATABASE_SSL_MODE";
/// The override of `sslrootcert`.
pub(crate) const ROOT_CERT_OVERRIDE: &str = "DATABASE_SSL_ROOT_CERT";

/// libpq's TLS parameters as found (each with where), and the overrides.
#[derive(Debug, Default)]
pub(crate) struct TlsInputs<'a> {
    pub mode: Option<(&'a str, TlsSource)>,
    pub root_cert: Option<(&'a str, TlsSource)>,
    pub cert: Option<(&'a str, TlsSource)>,
    pub key: Option<(&'a str, TlsSource)>,
    /// `sslcertmode=disable`: no client certificate is sent, so none is read.
    pub no_client_cert: bool,
    /// Which of `PGSSLCERT` and `PGSSLKEY` the process environment has (even empty): the
    /// driver reads them by itself, whatever the URL says.
    pub exported_client_files: &'a [&'static str],
    /// Those of them exported empty: libpq takes that for unset, the driver for a file named "".
    pub empty_client_files: &'a [&'static str],
    /// Whether any host is reached over TCP: over unix sockets alone there is no TLS, and no
    /// client certificate to get wrong.
    pub tls_possible: bool,
    pub mode_override: Option<SslMode>,
    pub root_cert_override: Option<&'a SslRootCert>,
    /// libpq's default CA file (`~/.postgresql/root.crt`), when it is there: libpq verifies the
    /// server with it where no CA file is named, the service never reads it.
    pub default_root_cert: Option<&'a std::path::Path>,
}

/// How a problem message names a source.
fn describe(source: TlsSource) -> String {
    match source {
        TlsSource::Url(parameter) => format!("{parameter} in the database URL"),
        TlsSource::Environment(variable) | TlsSource::Override(variable) => variable.to_owned(),
    }
}

/// Works out the TLS settings, with libpq's rules, and checks every file they name. Every
/// problem is found, not just the first, so that all are fixed at once.
pub(crate) fn resolve(inputs: &TlsInputs<'_>) -> Result<TlsSettings, Vec<TlsProblem>> {
    let mut problems = Vec::new();

    // What the URL (or libpq's environment) asks for; `Err` when that value is invalid.
    let asked_mode = inputs.mode.map(|(text, source)| {
        text.parse::<SslMode>()
            .map(|mode| (mode, source))
            .map_err(|error| problems.push(TlsProblem::new(source, error.0)))
    });
    let asked_root = inputs
        .root_cert
        .map(|(text, source)| (SslRootCert::parse(text), source));

    // The mode asked for, written out or (sslrootcert=system, no mode) implied: verify-full.
    let implied_mode = match (asked_mode, &asked_root) {
        (Some(asked), _) => Some(asked),
        (None, Some((SslRootCert::System, source))) => Some(Ok((SslMode::VerifyFull, *source))),
        (None, _) => None,
    };
    let mut mode_override = inputs.mode_override;
    if let (Some(mode), Some(Ok((asked, source)))) = (inputs.mode_override, implied_mode)
        && mode < asked
    {
        // Checked as asked from here on: the refusal says all there is to say.
        mode_override = None;
        problems.push(TlsProblem::new(
            TlsSource::Override(MODE_OVERRIDE),
            format!(
                "is {mode}, weaker than {asked} ({}): an override may only make TLS stricter; \
                 remove it, or set it to {asked} or stricter",
                describe(source)
            ),
        ));
    }
    if let (Some(root), Some((asked, source))) = (inputs.root_cert_override, &asked_root)
        && root != asked
    {
        problems.push(TlsProblem::new(
            TlsSource::Override(ROOT_CERT_OVERRIDE),
            format!(
                "names another CA than {}: name it in one place only",
                describe(*source)
            ),
        ));
    }

    // `None` inside: the mode is unknown (invalid), so checks that depend on it are skipped.
    let (mode, mode_source) = match (mode_override, asked_mode) {
        (Some(mode), _) => (Some(Some(mode)), TlsSource::Override(MODE_OVERRIDE)),
        (None, Some(Ok((mode, source)))) => (Some(Some(mode)), source),
        (None, Some(Err(()))) => (None, TlsSource::Url("sslmode")),
        (None, None) => (Some(None), TlsSource::Url("sslmode")),
    };
    let (root_cert, root_source) = match (inputs.root_cert_override, asked_root) {
        (Some(root), _) => (Some(root.clone()), TlsSource::Override(ROOT_CERT_OVERRIDE)),
        (None, Some((root, source))) => (Some(root), source),
        (None, None) => (None, TlsSource::Url("sslrootcert")),
    };

    let mode = mode.map(|mode| libpq_mode(mode, root_cert.as_ref()));
    problems.extend(
        check_trust(
            mode,
            mode_source,
            root_cert.as_ref(),
            root_source,
            inputs.tls_possible,
        )
        .err(),
    );
    // Under require, libpq verifies the server's certificate (as verify-ca) with its default CA
    // file when that is there and none is named; the service would check nothing, silently
    // weaker than psql on the same settings.
    if let (Some(SslMode::Require), None, Some(default), true) = (
        mode,
        &root_cert,
        inputs.default_root_cert,
        inputs.tls_possible,
    ) {
        problems.push(TlsProblem::new(
            mode_source,
            format!(
                "is require, and {} is there, with which libpq would verify the server's \
                 certificate; the service reads no default file: name it (sslrootcert, \
                 PGSSLROOTCERT or {ROOT_CERT_OVERRIDE}; require then verifies as libpq does), or \
                 better, use verify-full with it",
                default.display()
            ),
        ));
    }
    // An override that turns TLS off where the URL or the environment names a CA file and asks
    // no mode would leave that file checking nothing, silently. (The URL's own CA file under the
    // URL's own disable is taken as libpq takes it.)
    if inputs.tls_possible
        && mode_override == Some(SslMode::Disable)
        && asked_mode.is_none()
        && let (Some(SslRootCert::File(_)), TlsSource::Url(_) | TlsSource::Environment(_)) =
            (&root_cert, root_source)
    {
        problems.push(TlsProblem::new(
            mode_source,
            format!(
                "is disable, but {} names a CA file, which would then check nothing: an \
                 override may only make TLS stricter; remove it, and drop the CA file or set \
                 sslmode=disable beside it",
                describe(root_source)
            ),
        ));
    }
    // The exported client files matter only where a TLS handshake can happen.
    let handshake = inputs.tls_possible && mode != Some(SslMode::Disable);
    let client = if !handshake {
        // As libpq: files no handshake would send are not read (a PGSSLCERT exported for
        // another program, under sslmode=disable or over unix sockets).
        None
    } else if inputs.no_client_cert {
        // The driver reads PGSSLCERT and PGSSLKEY by itself and cannot be told to leave them
        // out: it would send what libpq would not.
        for &variable in inputs.exported_client_files {
            problems.push(TlsProblem::new(
                TlsSource::Environment(variable),
                format!(
                    "is set, but sslcertmode=disable: the driver would send that certificate \
                     anyway; unset {variable}"
                ),
            ));
        }
        None
    } else {
        let client = match check_client_certificate(inputs.cert, inputs.key) {
            Ok(client) => client,
            Err(found) => {
                problems.extend(found);
                None
            }
        };
        // A pair of ours replaces what the driver read; without one it keeps it.
        for &variable in inputs.empty_client_files {
            if client.is_none() {
                problems.push(TlsProblem::new(
                    TlsSource::Environment(variable),
                    format!(
                        "is set but empty: the driver would take it for a file named \"\" and \
                         fail every TLS handshake; unset {variable}"
                    ),
                ));
            }
        }
        client
    };
    match mode {
        Some(mode) if problems.is_empty() => Ok(TlsSettings {
            mode,
            root_cert,
            client,
        }),
        _ => Err(problems),
    }
}

/// The mode in effect: libpq's default and its rules for a root certificate.
fn libpq_mode(mode: Option<SslMode>, root_cert: Option<&SslRootCert>) -> SslMode {
    let mode = match (mode, root_cert) {
        (Some(mode), _) => mode,
        // libpq 16: the public roots make verify-full the default.
        (None, Some(SslRootCert::System)) => SslMode::VerifyFull,
        (None, _) => SslMode::Prefer,
    };
    match (mode, root_cert) {
        // libpq: "if a root CA file exists, require behaves like verify-ca".
        (SslMode::Require, Some(SslRootCert::File(_))) => SslMode::VerifyCa,
        (mode, _) => mode,
    }
}

/// The root certificate fits the mode (when the mode is known), and its file is a CA bundle.
fn check_trust(
    mode: Option<SslMode>,
    mode_source: TlsSource,
    root_cert: Option<&SslRootCert>,
    root_source: TlsSource,
    tls_possible: bool,
) -> Result<(), TlsProblem> {
    match (root_cert, mode) {
        (Some(SslRootCert::System), Some(mode)) if mode != SslMode::VerifyFull => {
            Err(TlsProblem::new(
                root_source,
                format!(
                    "system (the public roots) needs sslmode verify-full, not {mode}: any host \
                     can get a public certificate, only the host name check makes it safe"
                ),
            ))
        }
        (None, Some(mode @ (SslMode::VerifyCa | SslMode::VerifyFull))) => Err(TlsProblem::new(
            mode_source,
            format!(
                "{mode} needs sslrootcert: the CA file of the server's certificate, or system \
                 for the public roots"
            ),
        )),
        // No certificate is checked under disable: a CA file named by our override would be
        // ignored, silently (the URL's own under its own disable is libpq's business).
        (Some(SslRootCert::File(_)), Some(SslMode::Disable))
            if tls_possible && matches!(root_source, TlsSource::Override(_)) =>
        {
            Err(TlsProblem::new(
                root_source,
                "names a CA file, but sslmode is disable, under which no certificate is checked: \
                 set the sslmode to verify-full (or verify-ca), or drop the CA file",
            ))
        }
        // libpq checks the chain whenever it has a CA file (under prefer, falling back to
        // plaintext when the check fails); the driver checks it only under verify-ca and
        // verify-full, so here the file would be ignored. (Over unix sockets alone no TLS
        // happens, under any mode.)
        (Some(SslRootCert::File(_)), Some(SslMode::Prefer)) if tls_possible => {
            Err(TlsProblem::new(
                root_source,
                "names a CA file, but sslmode is prefer, under which no certificate is checked: \
                 set the sslmode to verify-full (or verify-ca, or require), or drop the CA file",
            ))
        }
        (Some(SslRootCert::File(path)), _) => read_ca_file(path)
            .map(drop)
            .map_err(|problem| TlsProblem::new(root_source, problem)),
        _ => Ok(()),
    }
}

/// The key's source for a certificate's and the other way round, from the same place: a missing
/// one is named where the present one was found.
fn partner(source: TlsSource) -> TlsSource {
    match source {
        TlsSource::Environment("PGSSLCERT") => TlsSource::Environment("PGSSLKEY"),
        TlsSource::Environment(_) => TlsSource::Environment("PGSSLCERT"),
        TlsSource::Url("sslkey") => TlsSource::Url("sslcert"),
        _ => TlsSource::Url("sslkey"),
    }
}

/// A client certificate and its key come together, and both files are usable.
fn check_client_certificate(
    cert: Option<(&str, TlsSource)>,
    key: Option<(&str, TlsSource)>,
) -> Result<Option<(PathBuf, PathBuf)>, Vec<TlsProblem>> {
    match (cert, key) {
        (Some((cert, cert_source)), Some((key, key_source))) => {
            let (cert, key) = (PathBuf::from(cert), PathBuf::from(key));
            let problems: Vec<TlsProblem> = [
                read_certificate_file(&cert)
                    .map(drop)
                    .map_err(|p| TlsProblem::new(cert_source, p)),
                read_key_file(&key)
                    .map(drop)
                    .map_err(|p| TlsProblem::new(key_source, p)),
            ]
            .into_iter()
            .filter_map(Result::err)
            .collect();
            if problems.is_empty() {
                Ok(Some((cert, key)))
            } else {
                Err(problems)
            }
        }
        (Some((_, source)), None) => Err(vec![TlsProblem::new(
            partner(source),
            "is missing: sslcert needs the key of its certificate",
        )]),
        (None, Some((_, source))) => Err(vec![TlsProblem::new(
            partner(source),
            "is missing: sslkey needs its certificate",
        )]),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const URL_MODE: TlsSource = TlsSource::Url("sslmode");
    const URL_ROOT: TlsSource = TlsSource::Url("sslrootcert");

    /// Writes `path`, not group-writable whatever the umask (002 would be refused).
    fn write_file(path: &std::path::Path, contents: impl AsRef<[u8]>) {
        std::fs::write(path, contents).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }

    /// A file holding garbage, and a CA bundle (the public roots), in a folder of this test.
    fn files() -> (tempfile::TempDir, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pem");
        write_file(&garbage, "not a certificate\n");
        let ca = dir.path().join("ca.pem");
        write_file(&ca, super::super::roots::public_roots_pem());
        let path = |path: std::path::PathBuf| path.to_str().unwrap().to_owned();
        (dir, path(garbage), path(ca))
    }

    fn sources(problems: &[TlsProblem]) -> Vec<TlsSource> {
        problems.iter().map(|problem| problem.source).collect()
    }

    /// libpq's default CA file, there, under require: libpq would verify with it, so the
    /// service refuses rather than check nothing; named, or under another mode, it is no matter.
    #[test]
    fn require_beside_libpqs_default_ca_file_is_refused() {
        let (dir, _, ca) = files();
        let default = dir.path().join("root.crt");
        let with_default = |mode: &'static str| TlsInputs {
            mode: Some((mode, URL_MODE)),
            tls_possible: true,
            default_root_cert: Some(&default),
            ..TlsInputs::default()
        };
        let problems = resolve(&with_default("require")).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].source, URL_MODE);
        assert!(
            problems[0].problem.contains("root.crt is there"),
            "{problems:?}"
        );
        assert!(resolve(&with_default("prefer")).is_ok());
        let named = TlsInputs {
            root_cert: Some((ca.as_str(), URL_ROOT)),
            ..with_default("require")
        };
        assert_eq!(resolve(&named).unwrap().mode, SslMode::VerifyCa);
        let sockets_only = TlsInputs {
            tls_possible: false,
            ..with_default("require")
        };
        assert!(resolve(&sockets_only).is_ok());
        let no_default = TlsInputs {
            default_root_cert: None,
            ..with_default("require")
        };
        assert!(resolve(&no_default).is_ok());
    }

    #[test]
    fn libpqs_default_is_prefer_and_the_override_wins() {
        assert_eq!(
            resolve(&TlsInputs::default()).unwrap().mode,
            SslMode::Prefer
        );
        let asked = TlsInputs {
            mode: Some(("require", URL_MODE)),
            ..TlsInputs::default()
        };
        assert_eq!(resolve(&asked).unwrap().mode, SslMode::Require);
        let stricter = TlsInputs {
            mode_override: Some(SslMode::VerifyFull),
            root_cert_override: Some(&SslRootCert::System),
            ..asked
        };
        assert_eq!(resolve(&stricter).unwrap().mode, SslMode::VerifyFull);
    }

    /// A client certificate without its key is refused where a handshake would send it, and
    /// not read where none can happen.
    #[test]
    fn client_files_are_checked_only_where_a_handshake_can_happen() {
        let lone_cert = TlsInputs {
            cert: Some((
                "/nonexistent/client.crt",
                TlsSource::Environment("PGSSLCERT"),
            )),
            tls_possible: true,
            ..TlsInputs::default()
        };
        assert!(resolve(&lone_cert).is_err());
        let disabled = TlsInputs {
            mode: Some(("disable", URL_MODE)),
            ..lone_cert
        };
        assert_eq!(resolve(&disabled).unwrap().client, None);
        let sockets_only = TlsInputs {
            tls_possible: false,
            ..lone_cert
        };
        assert_eq!(resolve(&sockets_only).unwrap().client, None);
    }

    /// libpq checks the chain whenever it has a CA file; the driver only under verify-ca and
    /// verify-full. A CA file under prefer (given or the default) would be ignored: refused.
    #[test]
    fn a_ca_file_under_prefer_is_refused_as_it_would_check_nothing() {
        let (_dir, _, ca) = files();
        for mode in [None, Some(("prefer", URL_MODE))] {
            let problems = resolve(&TlsInputs {
                mode,
                root_cert: Some((&ca, URL_ROOT)),
                tls_possible: true,
                ..TlsInputs::default()
            })
            .unwrap_err();
            assert_eq!(sources(&problems), [URL_ROOT], "{mode:?}");
            let line = problems[0].to_problem("DATABASE_URL").to_string();
            assert!(line.contains("sslmode is prefer"), "{line}");
        }
        for (mode, effective) in [
            ("require", SslMode::VerifyCa),
            ("verify-ca", SslMode::VerifyCa),
            ("disable", SslMode::Disable),
        ] {
            let settings = resolve(&TlsInputs {
                mode: Some((mode, URL_MODE)),
                root_cert: Some((&ca, URL_ROOT)),
                tls_possible: true,
                ..TlsInputs::default()
            })
            .unwrap();
            assert_eq!(settings.mode, effective, "{mode}");
        }
        // Unix sockets alone: no TLS under any mode, so nothing to refuse.
        let sockets = resolve(&TlsInputs {
            root_cert: Some((&ca, URL_ROOT)),
            tls_possible: false,
            ..TlsInputs::default()
        });
        assert!(sockets.is_ok(), "{:?}", sockets.err());
    }

    /// A CA file under disable checks nothing. The URL's under the URL's disable is taken as
    /// libpq takes it (above); an override that names one, or that turns TLS off under the
    /// URL's, is refused, naming the override.
    #[test]
    fn an_override_under_disable_is_refused_as_it_would_check_nothing() {
        let (_dir, _, ca) = files();
        let ca_override = SslRootCert::File(ca.clone().into());
        // The one problem `inputs` has: where, and its line.
        let only_problem = |inputs: TlsInputs<'_>| {
            let problems = resolve(&inputs).unwrap_err();
            assert_eq!(problems.len(), 1, "{problems:?}");
            let line = problems[0].to_problem("DATABASE_URL").to_string();
            (problems[0].source, line)
        };
        let (source, _) = only_problem(TlsInputs {
            mode: Some(("disable", URL_MODE)),
            root_cert_override: Some(&ca_override),
            tls_possible: true,
            ..TlsInputs::default()
        });
        assert_eq!(source, TlsSource::Override("DATABASE_SSL_ROOT_CERT"));
        for (root_source, named) in [
            (URL_ROOT, "sslrootcert in the database URL"),
            (TlsSource::Environment("PGSSLROOTCERT"), "PGSSLROOTCERT"),
        ] {
            let (source, line) = only_problem(TlsInputs {
                root_cert: Some((&ca, root_source)),
                mode_override: Some(SslMode::Disable),
                tls_possible: true,
                ..TlsInputs::default()
            });
            assert_eq!(source, TlsSource::Override("DATABASE_SSL_MODE"));
            assert!(line.contains(named), "{line}");
        }
        // The URL's own disable beside its CA file, as libpq takes it: the same override
        // changes nothing, and is not blamed.
        let same = resolve(&TlsInputs {
            mode: Some(("disable", URL_MODE)),
            root_cert: Some((&ca, URL_ROOT)),
            mode_override: Some(SslMode::Disable),
            tls_possible: true,
            ..TlsInputs::default()
        });
        assert_eq!(same.unwrap().mode, SslMode::Disable);
        // One line, not also "cannot read": the file is never read under disable.
        let missing = SslRootCert::File("/nonexistent/ca.pem".into());
        let (source, line) = only_problem(TlsInputs {
            mode: Some(("disable", URL_MODE)),
            root_cert_override: Some(&missing),
            tls_possible: true,
            ..TlsInputs::default()
        });
        assert_eq!(source, TlsSource::Override("DATABASE_SSL_ROOT_CERT"));
        assert!(line.contains("sslmode is disable"), "{line}");
        // Unix sockets alone: no TLS under any mode, so nothing to refuse.
        let sockets = resolve(&TlsInputs {
            mode: Some(("disable", URL_MODE)),
            root_cert_override: Some(&ca_override),
            tls_possible: false,
            ..TlsInputs::default()
        });
        assert!(sockets.is_ok(), "{:?}", sockets.err());
    }

    /// A leftover `.env` with `DATABASE_SSL_MODE=prefer` must not undo a production URL's
    /// `verify-full`: refused, naming both.
    #[test]
    fn an_override_may_not_weaken_what_the_url_or_environment_asks() {
        let (_dir, _, ca) = files();
        // sslrootcert=system without a mode asks for verify-full as much as a written one.
        for (mode, root, asked) in [
            (Some(("verify-full", URL_MODE)), ca.as_str(), "verify-full"),
            (
                Some(("require", TlsSource::Environment("PGSSLMODE"))),
                ca.as_str(),
                "require",
            ),
            (None, "system", "verify-full"),
        ] {
            let problems = resolve(&TlsInputs {
                mode,
                root_cert: Some((root, URL_ROOT)),
                mode_override: Some(SslMode::Prefer),
                tls_possible: true,
                ..TlsInputs::default()
            })
            .unwrap_err();
            assert_eq!(
                sources(&problems),
                [TlsSource::Override("DATABASE_SSL_MODE")]
            );
            let line = problems[0].to_problem("DATABASE_URL").to_string();
            assert!(
                line.starts_with("DATABASE_SSL_MODE is prefer, weaker than"),
                "{line}"
            );
            assert!(line.contains(asked), "{line}");
        }
        let other = SslRootCert::File("/etc/other-ca.pem".into());
        let problems = resolve(&TlsInputs {
            mode: Some(("verify-full", URL_MODE)),
            root_cert: Some((&ca, URL_ROOT)),
            root_cert_override: Some(&other),
            ..TlsInputs::default()
        })
        .unwrap_err();
        assert_eq!(
            sources(&problems)[0],
            TlsSource::Override("DATABASE_SSL_ROOT_CERT")
        );
        // The same CA named twice is no conflict.
        let same = SslRootCert::File(ca.clone().into());
        assert!(
            resolve(&TlsInputs {
                mode: Some(("verify-full", URL_MODE)),
                root_cert: Some((&ca, URL_ROOT)),
                root_cert_override: Some(&same),
                ..TlsInputs::default()
            })
            .is_ok()
        );
    }

    #[test]
    fn system_roots_default_to_verify_full_and_refuse_weaker_modes() {
        let system = TlsInputs {
            root_cert: Some(("system", URL_ROOT)),
            ..TlsInputs::default()
        };
        assert_eq!(resolve(&system).unwrap().mode, SslMode::VerifyFull);
        let weaker = TlsInputs {
            mode: Some(("require", URL_MODE)),
            ..system
        };
        assert_eq!(sources(&resolve(&weaker).unwrap_err()), [URL_ROOT]);
    }

    #[test]
    fn require_with_a_ca_file_verifies_the_ca_and_verification_needs_a_root() {
        let (_dir, _, ca) = files();
        let with_file = TlsInputs {
            mode: Some(("require", TlsSource::Environment("PGSSLMODE"))),
            root_cert: Some((&ca, TlsSource::Environment("PGSSLROOTCERT"))),
            ..TlsInputs::default()
        };
        assert_eq!(resolve(&with_file).unwrap().mode, SslMode::VerifyCa);
        let no_root = TlsInputs {
            mode: Some(("verify-full", URL_MODE)),
            ..TlsInputs::default()
        };
        assert_eq!(sources(&resolve(&no_root).unwrap_err()), [URL_MODE]);
        let no_root = TlsInputs {
            mode_override: Some(SslMode::VerifyCa),
            ..TlsInputs::default()
        };
        assert_eq!(
            sources(&resolve(&no_root).unwrap_err()),
            [TlsSource::Override("DATABASE_SSL_MODE")]
        );
    }

    #[test]
    fn allow_and_unknown_modes_are_refused() {
        for mode in ["allow", "sometimes"] {
            let problems = resolve(&TlsInputs {
                mode: Some((mode, URL_MODE)),
                ..TlsInputs::default()
            })
            .unwrap_err();
            assert_eq!(sources(&problems), [URL_MODE]);
        }
        assert_eq!("Verify-Full".parse::<SslMode>(), Ok(SslMode::VerifyFull));
    }

    /// Every problem at once, one per setting, each named where it was found.
    #[test]
    fn every_tls_problem_is_reported_naming_its_setting_never_a_value() {
        let (_dir, garbage, _) = files();
        let problems = resolve(&TlsInputs {
            mode: Some(("verify-full", URL_MODE)),
            root_cert: Some(("/nonexistent/ca.crt", URL_ROOT)),
            cert: Some((&garbage, TlsSource::Url("sslcert"))),
            key: Some((&garbage, TlsSource::Url("sslkey"))),
            tls_possible: true,
            ..TlsInputs::default()
        })
        .unwrap_err();
        assert_eq!(
            sources(&problems),
            [
                URL_ROOT,
                TlsSource::Url("sslcert"),
                TlsSource::Url("sslkey")
            ]
        );
        assert!(
            problems[0]
                .problem
                .contains("cannot read /nonexistent/ca.crt")
        );
        let line = problems[0].to_problem("DATABASE_URL").to_string();
        assert!(
            line.starts_with(
                "DATABASE_URL has a bad TLS parameter: sslrootcert (in the database URL): cannot read"
            ),
            "{line}"
        );
        // A certificate without its key names the key, where the certificate was found.
        let problems = resolve(&TlsInputs {
            cert: Some((&garbage, TlsSource::Environment("PGSSLCERT"))),
            tls_possible: true,
            ..TlsInputs::default()
        })
        .unwrap_err();
        assert_eq!(sources(&problems), [TlsSource::Environment("PGSSLKEY")]);
        // sslcertmode=disable sends no certificate, so none is read.
        assert!(
            resolve(&TlsInputs {
                cert: Some((&garbage, TlsSource::Url("sslcert"))),
                no_client_cert: true,
                ..TlsInputs::default()
            })
            .is_ok()
        );
        // Unless the environment has PGSSLCERT or PGSSLKEY (whatever the URL says), which the
        // driver reads by itself and would send: that is refused, naming the variable.
        let refused = TlsInputs {
            cert: Some((&garbage, TlsSource::Url("sslcert"))),
            no_client_cert: true,
            exported_client_files: &["PGSSLCERT", "PGSSLKEY"],
            tls_possible: true,
            ..TlsInputs::default()
        };
        // Where no handshake can happen (TLS off, or sockets alone), nothing would be sent.
        let tls_off = TlsInputs {
            mode: Some(("disable", TlsSource::Url("sslmode"))),
            ..refused
        };
        assert!(resolve(&tls_off).is_ok());
        assert!(
            resolve(&TlsInputs {
                tls_possible: false,
                ..refused
            })
            .is_ok()
        );
        let problems = resolve(&refused).unwrap_err();
        assert_eq!(
            sources(&problems),
            [
                TlsSource::Environment("PGSSLCERT"),
                TlsSource::Environment("PGSSLKEY")
            ]
        );
        assert!(problems[0].problem.contains("sslcertmode=disable"));
        // Exported empty, which the driver reads as a file named "": refused unless TLS is off.
        let empty = ["PGSSLCERT"];
        let problems = resolve(&TlsInputs {
            mode: Some(("require", TlsSource::Url("sslmode"))),
            exported_client_files: &empty,
            empty_client_files: &empty,
            tls_possible: true,
            ..TlsInputs::default()
        })
        .unwrap_err();
        assert_eq!(sources(&problems), [TlsSource::Environment("PGSSLCERT")]);
        assert!(
            problems[0].problem.contains("set but empty"),
            "{problems:?}"
        );
        assert!(
            resolve(&TlsInputs {
                mode: Some(("disable", TlsSource::Url("sslmode"))),
                exported_client_files: &empty,
                empty_client_files: &empty,
                ..TlsInputs::default()
            })
            .is_ok()
        );
    }

    #[test]
    fn malformed_ca_files_are_named() {
        let (dir, garbage, _) = files();
        let truncated = dir.path().join("truncated.pem");
        write_file(
            &truncated,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        );
        for (file, expected) in [
            (garbage.as_str(), "holds no PEM certificate"),
            (truncated.to_str().unwrap(), "not a valid CA"),
        ] {
            let problems = resolve(&TlsInputs {
                mode: Some(("verify-full", URL_MODE)),
                root_cert: Some((file, URL_ROOT)),
                ..TlsInputs::default()
            })
            .unwrap_err();
            assert!(problems[0].problem.contains(expected), "{problems:?}");
        }
    }
}
