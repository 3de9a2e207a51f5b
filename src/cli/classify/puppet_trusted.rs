//! `$trusted` as Puppet 7 makes it from a verified certificate
//! (`Puppet::Context::TrustedInformation.remote`, `Puppet::SSL::Certificate#custom_extensions`,
//! `Puppet::SSL::Oids`), so a rule on `["trusted", ...]` reads what the node's manifests read.
//! The tests in `tests/api/trusted.rs` hold this to Puppet's own Ruby.

use serde_json::{Map, Value, json};

use super::der;

/// `Puppet::SSL::Oids::PUPPET_OIDS`: the names Puppet registers with OpenSSL, which an
/// extension's `oid` is then called by.
const PUPPET_OIDS: &[(&str, &str)] = &[
    ("1.3.6.1.4.1.34380", "puppetlabs"),
    ("1.3.6.1.4.1.34380.1", "ppCertExt"),
    ("1.3.6.1.4.1.34380.1.1", "ppRegCertExt"),
    ("1.3.6.1.4.1.34380.1.1.1", "pp_uuid"),
    ("1.3.6.1.4.1.34380.1.1.2", "pp_instance_id"),
    ("1.3.6.1.4.1.34380.1.1.3", "pp_image_name"),
    ("1.3.6.1.4.1.34380.1.1.4", "pp_preshared_key"),
    ("1.3.6.1.4.1.34380.1.1.5", "pp_cost_center"),
    ("1.3.6.1.4.1.34380.1.1.6", "pp_product"),
    ("1.3.6.1.4.1.34380.1.1.7", "pp_project"),
    ("1.3.6.1.4.1.34380.1.1.8", "pp_application"),
    ("1.3.6.1.4.1.34380.1.1.9", "pp_service"),
    ("1.3.6.1.4.1.34380.1.1.10", "pp_employee"),
    ("1.3.6.1.4.1.34380.1.1.11", "pp_created_by"),
    ("1.3.6.1.4.1.34380.1.1.12", "pp_environment"),
    ("1.3.6.1.4.1.34380.1.1.13", "pp_role"),
    ("1.3.6.1.4.1.34380.1.1.14", "pp_software_version"),
    ("1.3.6.1.4.1.34380.1.1.15", "pp_department"),
    ("1.3.6.1.4.1.34380.1.1.16", "pp_cluster"),
    ("1.3.6.1.4.1.34380.1.1.17", "pp_provisioner"),
    ("1.3.6.1.4.1.34380.1.1.18", "pp_region"),
    ("1.3.6.1.4.1.34380.1.1.19", "pp_datacenter"),
    ("1.3.6.1.4.1.34380.1.1.20", "pp_zone"),
    ("1.3.6.1.4.1.34380.1.1.21", "pp_network"),
    ("1.3.6.1.4.1.34380.1.1.22", "pp_securitypolicy"),
    ("1.3.6.1.4.1.34380.1.1.23", "pp_cloudplatform"),
    ("1.3.6.1.4.1.34380.1.1.24", "pp_apptier"),
    ("1.3.6.1.4.1.34380.1.1.25", "pp_hostname"),
    ("1.3.6.1.4.1.34380.1.1.26", "pp_owner"),
    ("1.3.6.1.4.1.34380.1.2", "ppPrivCertExt"),
    ("1.3.6.1.4.1.34380.1.3", "ppAuthCertExt"),
    ("1.3.6.1.4.1.34380.1.3.1", "pp_authorization"),
    ("1.3.6.1.4.1.34380.1.3.13", "pp_auth_role"),
];

/// The arcs whose extensions Puppet puts in `$trusted`: registered, private, authorization.
const PUPPET_ARCS: [&str; 3] = [
    "1.3.6.1.4.1.34380.1.1",
    "1.3.6.1.4.1.34380.1.2",
    "1.3.6.1.4.1.34380.1.3",
];

/// Whether Puppet includes the extension `oid` (dotted). `Oids.subtree_of?` compares the
/// dotted strings by prefix, so `...34380.1.10` counts as under `...34380.1.1`; Puppet does
/// so, and so does this. (Puppet Server's `Puppet::Server::Certificate` also leaves out an
/// extension whose OID is an arc itself, which no CSR attribute makes; this follows the Ruby.)
pub(super) fn is_puppets(oid: &str) -> bool {
    PUPPET_ARCS.iter().any(|arc| oid.starts_with(arc))
}

/// The key Puppet gives the extension `oid` (dotted): its registered short name, or the
/// dotted OID.
pub(super) fn key(oid: &str) -> &str {
    PUPPET_OIDS
        .iter()
        .find(|(dotted, _)| *dotted == oid)
        .map_or(oid, |(_, name)| name)
}

/// An extension's value as `Certificate#get_ext_val` reads it: the DER inside `extnValue`
/// decoded, or, when that is not one whole DER element, its raw bytes (the old style of
/// trusted facts). Strings and booleans are what Puppet's CA writes (UTF8String); other
/// ASN.1 types become Ruby objects in Puppet that have no JSON form, and are left out.
pub(super) fn value(extn_value: &[u8]) -> Option<Value> {
    const STRINGS: [u8; 12] = [
        der::OCTET_STRING,
        0x0c, // UTF8String
        0x12, // NumericString
        0x13, // PrintableString
        0x14, // T61String
        0x15, // VideotexString
        0x16, // IA5String
        0x19, // GraphicString
        0x1a, // VisibleString
        0x1b, // GeneralString
        0x1c, // UniversalString
        0x1e, // BMPString
    ];
    let Some(decoded) = der::whole(extn_value) else {
        return Some(text(extn_value));
    };
    match decoded.tag {
        tag if STRINGS.contains(&tag) => Some(text(decoded.contents)),
        der::BOOLEAN => Some(Value::Bool(decoded.contents.iter().any(|&b| b != 0))),
        0x05 => Some(Value::Null),
        _ => None,
    }
}

/// Bytes as a JSON string; Ruby keeps invalid UTF-8 as bytes, JSON cannot.
fn text(bytes: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(bytes).into_owned())
}

/// `hostname, domain = certname.split('.', 2)`: the domain is null without a dot.
pub(super) fn hostname_and_domain(certname: &str) -> (&str, Option<&str>) {
    match certname.split_once('.') {
        Some((hostname, domain)) => (hostname, Some(domain)),
        None => (certname, None),
    }
}

/// `TrustedInformation.remote(true, certname, certificate).to_h` for a certificate whose
/// extensions are `extensions` (dotted OID, `extnValue` contents), with no
/// `trusted_external_command`.
pub(super) fn trusted(certname: &str, extensions: &[(String, &[u8])]) -> Value {
    let mut found = Map::new();
    for (oid, extn_value) in extensions {
        if is_puppets(oid)
            && let Some(value) = value(extn_value)
        {
            found.insert(key(oid).to_owned(), value);
        }
    }
    let (hostname, domain) = hostname_and_domain(certname);
    json!({
        "authenticated": "remote",
        "certname": certname,
        "extensions": found,
        "hostname": hostname,
        "domain": domain,
        "external": {},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_oids_by_their_short_names_others_dotted() {
        assert_eq!(key("1.3.6.1.4.1.34380.1.1.13"), "pp_role");
        assert_eq!(key("1.3.6.1.4.1.34380.1.1.12"), "pp_environment");
        assert_eq!(key("1.3.6.1.4.1.34380.1.1.1"), "pp_uuid");
        assert_eq!(key("1.3.6.1.4.1.34380.1.1.26"), "pp_owner");
        assert_eq!(key("1.3.6.1.4.1.34380.1.3.1"), "pp_authorization");
        assert_eq!(key("1.3.6.1.4.1.34380.1.3.13"), "pp_auth_role");
        assert_eq!(key("1.3.6.1.4.1.34380.1.2.7"), "1.3.6.1.4.1.34380.1.2.7");
        assert_eq!(key("1.3.6.1.4.1.34380.1.1.27"), "1.3.6.1.4.1.34380.1.1.27");
    }

    #[test]
    fn only_puppets_arcs_by_their_dotted_prefix() {
        for oid in [
            "1.3.6.1.4.1.34380.1.1.13",
            "1.3.6.1.4.1.34380.1.2.1",
            "1.3.6.1.4.1.34380.1.3.1",
            "1.3.6.1.4.1.34380.1.2",
            "1.3.6.1.4.1.34380.1.10", // a prefix of the string, as Puppet compares
        ] {
            assert!(is_puppets(oid), "{oid}");
        }
        for oid in [
            "1.2.3.4.5",
            "2.5.29.19", // basicConstraints
            "1.3.6.1.4.1.34380.1",
            "1.3.6.1.4.1.34380.1.4.1",
            "1.3.6.1.4.1.34380.2.1",
        ] {
            assert!(!is_puppets(oid), "{oid}");
        }
    }

    #[test]
    fn values_decoded_as_puppet_decodes_them() {
        assert_eq!(value(&[0x0c, 2, b'd', b'b']), Some(json!("db")));
        assert_eq!(value(&[0x13, 2, b'd', b'b']), Some(json!("db")));
        assert_eq!(value(&[0x16, 0]), Some(json!("")));
        assert_eq!(value(&[0x01, 1, 0xff]), Some(json!(true)));
        assert_eq!(value(b"hello"), Some(json!("hello")), "not DER: the bytes");
        assert_eq!(
            value(&[0x0c, 2, b'd', b'b', 0]),
            Some(json!("\u{c}\u{2}db\0"))
        );
        assert_eq!(
            value(&[0x02, 1, 5]),
            None,
            "an INTEGER has no JSON form in Puppet"
        );
        assert_eq!(value(&[0x30, 3, 0x0c, 1, b'x']), None);
    }

    #[test]
    fn hostname_and_domain_split_at_the_first_dot() {
        assert_eq!(
            hostname_and_domain("web01.example.com"),
            ("web01", Some("example.com"))
        );
        assert_eq!(hostname_and_domain("web01"), ("web01", None));
        assert_eq!(hostname_and_domain("web01."), ("web01", Some("")));
    }

    #[test]
    fn trusted_holds_puppets_extensions_only() {
        let role: &[u8] = &[0x0c, 2, b'd', b'b'];
        let extensions = [
            ("1.3.6.1.4.1.34380.1.1.13".to_owned(), role),
            ("1.3.6.1.4.1.34380.1.2.1".to_owned(), b"raw".as_slice()),
            ("1.2.3.4.5".to_owned(), role),
            ("2.5.29.19".to_owned(), [0x30, 0].as_slice()),
        ];
        assert_eq!(
            trusted("db01", &extensions),
            json!({
                "authenticated": "remote", "certname": "db01", "hostname": "db01",
                "domain": null, "external": {},
                "extensions": {"pp_role": "db", "1.3.6.1.4.1.34380.1.2.1": "raw"},
            })
        );
    }
}
