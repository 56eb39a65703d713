//! `make-tls-files DIR NAME...`: a fresh CA and a server certificate for the NAMEs (DNS names or
//! IP addresses), written as DIR/ca.crt, DIR/server.crt and DIR/server.key (0600). For scripts
//! that start a PostgreSQL with TLS themselves (`just bench`); tests use `PgCluster::start_with`.

use std::path::Path;
use std::process::ExitCode;

use counseling_testkit::tls::{CertificateAuthority, write_private};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, names @ ..] = args.as_slice() else {
        eprintln!("usage: make-tls-files DIR NAME...");
        return ExitCode::from(2);
    };
    if names.is_empty() {
        eprintln!("usage: make-tls-files DIR NAME...");
        return ExitCode::from(2);
    }
    match write(Path::new(dir), names) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("make-tls-files: {error}");
            ExitCode::FAILURE
        }
    }
}

fn write(dir: &Path, names: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let ca = CertificateAuthority::new("counseling bench CA")?;
    let server = ca.issue_server(names)?;
    std::fs::write(dir.join("ca.crt"), ca.certificate_pem())?;
    std::fs::write(dir.join("server.crt"), &server.certificate_pem)?;
    write_private(&dir.join("server.key"), &server.key_pem)?;
    Ok(())
}
