//! `sslrootcert=system`: the public roots compiled into the binary (Mozilla's list, from
//! webpki-root-certs), as the one PEM bundle the driver takes CAs in.
//!
//! The driver's own built-in roots are patched away (crates/webpki-roots-none), so that a CA file
//! is the whole trust, as in libpq; `system` passes Mozilla's roots in explicitly instead.

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// Roots that Mozilla trusts for some domains only. A PEM bundle cannot carry that limit, so
/// these are left out of `system` rather than trusted for every host name. The subject's common
/// name, as it appears in the certificate (webpki-roots lists the constraint: `.tr` only).
const NAME_CONSTRAINED_ROOTS: &[&[u8]] = &[b"TUBITAK Kamu SM SSL Kok Sertifikasi - Surum 1"];

fn is_name_constrained(root: &[u8]) -> bool {
    NAME_CONSTRAINED_ROOTS
        .iter()
        .any(|name| root.windows(name.len()).any(|window| window == *name))
}

/// Mozilla's roots as one PEM bundle, less those Mozilla constrains to some domains; built once.
pub(crate) fn public_roots_pem() -> &'static [u8] {
    static PEM: LazyLock<Vec<u8>> = LazyLock::new(|| {
        let mut pem = String::new();
        for root in webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .filter(|root| !is_name_constrained(root.as_ref()))
        {
            pem.push_str("-----BEGIN CERTIFICATE-----\n");
            // 48 bytes make one 64-character PEM line.
            for line in root.as_ref().chunks(48) {
                BASE64.encode_string(line, &mut pem);
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
        }
        pem.into_bytes()
    });
    &PEM
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    use super::*;

    /// The driver adds `sslrootcert` to `webpki_roots::TLS_SERVER_ROOTS`; with Mozilla's roots
    /// there, `verify-ca` with a private CA would accept any publicly issued certificate. The
    /// workspace patches that crate empty (crates/webpki-roots-none): this fails without it.
    #[test]
    fn tls_trust_a_ca_file_is_the_whole_trust() {
        assert!(
            webpki_roots::TLS_SERVER_ROOTS.is_empty(),
            "the driver trusts {} built-in roots besides sslrootcert: is the workspace's \
             [patch.crates-io] webpki-roots gone?",
            webpki_roots::TLS_SERVER_ROOTS.len()
        );
    }

    /// A version bump of the driver could bring its roots back past the patch: another major
    /// version of webpki-roots (the patch would not apply) or the platform's store.
    #[test]
    fn tls_trust_the_lock_file_has_only_the_empty_roots() {
        let lock =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock"))
                .unwrap();
        let packages: Vec<&str> = lock.split("[[package]]").collect();
        let roots: Vec<&&str> = packages
            .iter()
            .filter(|package| package.contains("\nname = \"webpki-roots\"\n"))
            .collect();
        assert_eq!(roots.len(), 1, "{roots:?}");
        assert!(
            !roots[0].contains("source = "),
            "not the patched copy: {}",
            roots[0]
        );
        assert!(!lock.contains("name = \"rustls-native-certs\""));
    }

    #[test]
    fn tls_trust_system_is_mozillas_roots_less_the_name_constrained() {
        let passed: Vec<_> = CertificateDer::pem_slice_iter(public_roots_pem())
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(passed.len() > 100, "{}", passed.len());
        // Mozilla limits this root to `.tr` (webpki-roots 1.0.10, name_constraints).
        let tubitak = b"TUBITAK Kamu SM SSL Kok Sertifikasi";
        let names = |root: &CertificateDer<'_>| {
            root.as_ref()
                .windows(tubitak.len())
                .any(|window| window == tubitak)
        };
        let all = webpki_root_certs::TLS_SERVER_ROOT_CERTS;
        assert_eq!(all.iter().filter(|root| names(root)).count(), 1);
        assert!(!passed.iter().any(names));
        let others: Vec<_> = all.iter().filter(|root| !names(root)).collect();
        assert_eq!(passed.iter().collect::<Vec<_>>(), others);
    }
}
