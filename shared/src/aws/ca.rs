//! Whether an RDS instance's certificate authority (`CACertificateIdentifier`) is one the embedded
//! Amazon RDS bundle trusts.
//!
//! RDS names its CAs `rds-ca-rsa2048-g1`, `rds-ca-rsa4096-g1`, `rds-ca-ecc384-g1` (and the expired
//! `rds-ca-2019`); each exists once per region as a root named `Amazon RDS <region> Root CA
//! <variant> G1`. The bundle's root names are read from the certificates themselves (the common
//! names in their DER subjects), so a bundle update changes the answer without code changes.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::pg::tls::RDS_CA_BUNDLE_PEM;

/// The common name RDS gives the root of `ca_identifier` in `region`, if the identifier is one of
/// the G1 families (`rds-ca-rsa2048-g1` → `Amazon RDS us-east-1 Root CA RSA2048 G1`).
pub fn expected_root_name(ca_identifier: &str, region: &str) -> Option<String> {
    let variant = ca_identifier.strip_prefix("rds-ca-")?.strip_suffix("-g1")?;
    let variant = match variant {
        "rsa2048" => "RSA2048",
        "rsa4096" => "RSA4096",
        "ecc384" => "ECC384",
        _ => return None,
    };
    Some(format!("Amazon RDS {region} Root CA {variant} G1"))
}

/// Common names of the roots in the embedded bundle.
pub fn bundle_root_names() -> &'static BTreeSet<String> {
    static NAMES: OnceLock<BTreeSet<String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        CertificateDer::pem_slice_iter(RDS_CA_BUNDLE_PEM)
            .filter_map(|c| c.ok())
            .flat_map(|der| common_names(der.as_ref()))
            .collect()
    })
}

/// The verdict for one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaVerdict {
    /// The bundle holds the instance's root.
    Trusted { root: String },
    /// The identifier names no root in the bundle (expired or unknown CA).
    NotInBundle { identifier: String },
}

/// Looks the instance's CA up in the embedded bundle.
pub fn check(ca_identifier: &str, region: &str) -> CaVerdict {
    match expected_root_name(ca_identifier, region) {
        Some(root) if bundle_root_names().contains(&root) => CaVerdict::Trusted { root },
        _ => CaVerdict::NotInBundle { identifier: ca_identifier.to_string() },
    }
}

/// The `commonName` (OID 2.5.4.3) values found in a DER certificate. A minimal DER walk: every
/// `AttributeTypeAndValue` is `SEQUENCE { OID, string }`, so each OID 2.5.4.3 is followed by the
/// string holding the name (issuer and subject coincide in a self-signed root).
fn common_names(der: &[u8]) -> Vec<String> {
    const CN_OID: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x03];
    let mut names = Vec::new();
    let mut i = 0;
    while i + CN_OID.len() + 2 <= der.len() {
        if der[i..i + CN_OID.len()] == CN_OID {
            let tag = der[i + CN_OID.len()];
            let len = der[i + CN_OID.len() + 1] as usize;
            let start = i + CN_OID.len() + 2;
            // UTF8String, PrintableString, IA5String, T61String, BMP not used by RDS; short form only.
            if matches!(tag, 0x0c | 0x13 | 0x16 | 0x14) && len < 0x80 && start + len <= der.len() {
                if let Ok(s) = std::str::from_utf8(&der[start..start + len]) {
                    names.push(s.to_string());
                }
            }
            i = start;
        } else {
            i += 1;
        }
    }
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t49_the_bundle_holds_the_three_g1_roots_of_each_region() {
        let names = bundle_root_names();
        for variant in ["RSA2048", "RSA4096", "ECC384"] {
            assert!(names.contains(&format!("Amazon RDS us-east-1 Root CA {variant} G1")), "{names:?}");
            assert!(names.contains(&format!("Amazon RDS eu-west-1 Root CA {variant} G1")));
        }
    }

    #[test]
    fn t49_current_cas_are_trusted_and_the_expired_2019_ca_is_not() {
        assert!(matches!(check("rds-ca-rsa2048-g1", "us-east-1"), CaVerdict::Trusted { .. }));
        assert!(matches!(check("rds-ca-ecc384-g1", "eu-central-1"), CaVerdict::Trusted { .. }));
        assert!(matches!(check("rds-ca-2019", "us-east-1"), CaVerdict::NotInBundle { .. }));
        assert!(matches!(check("rds-ca-rsa2048-g1", "xx-nowhere-1"), CaVerdict::NotInBundle { .. }));
    }
}
