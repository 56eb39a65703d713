//! An empty set of built-in trust anchors, in place of Mozilla's.
//!
//! sqlx (0.9, rustls) starts every certificate check from `webpki_roots::TLS_SERVER_ROOTS` and
//! *adds* the CAs of `sslrootcert` to them. libpq trusts the file only. With Mozilla's roots
//! underneath, `verify-ca` with a private CA file would also accept any certificate any public
//! CA ever issued, for any host: a man in the middle only needs a certificate for a domain of
//! their own. The workspace patches `webpki-roots` with this crate, so that the CA file is the
//! whole trust, as in libpq. `sslrootcert=system` hands the driver Mozilla's roots explicitly
//! (`webpki-root-certs`, see counseling-config's `tls` module).
//!
//! A test of counseling-config (`tls_trust_a_ca_file_is_the_whole_trust`) fails without
//! this patch.
#![no_std]

use rustls_pki_types::TrustAnchor;

/// The roots the driver trusts without being told: none.
pub const TLS_SERVER_ROOTS: &[TrustAnchor<'static>] = &[];
