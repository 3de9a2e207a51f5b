//! Just enough DER to read a certificate's subject common name and extensions, which
//! `webpki` verifies but does not hand out. It reads a certificate only after `webpki` has
//! verified its signature, so a reading mistake here cannot make a forged certificate count;
//! it can only misread a genuine one, which the tests against Puppet's own reading guard.

/// One DER element: its tag byte and its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Element<'a> {
    pub(super) tag: u8,
    pub(super) contents: &'a [u8],
}

pub(super) const BOOLEAN: u8 = 0x01;
pub(super) const OCTET_STRING: u8 = 0x04;
pub(super) const OID: u8 = 0x06;
pub(super) const SEQUENCE: u8 = 0x30;
pub(super) const SET: u8 = 0x31;

/// The element at the start of `input`, and what follows it.
pub(super) fn element(input: &[u8]) -> Option<(Element<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // multi-byte tags: nothing this module reads uses them
    }
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None; // indefinite length is BER, not DER
        }
        let (bytes, rest) = rest.split_at(count);
        let length = bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b));
        (length, rest)
    };
    if rest.len() < length {
        return None;
    }
    let (contents, rest) = rest.split_at(length);
    Some((Element { tag, contents }, rest))
}

/// The element that is the whole of `input`.
pub(super) fn whole(input: &[u8]) -> Option<Element<'_>> {
    match element(input)? {
        (found, []) => Some(found),
        _ => None,
    }
}

/// The elements inside a constructed element's contents, in order.
pub(super) fn children(contents: &[u8]) -> Option<Vec<Element<'_>>> {
    let mut found = Vec::new();
    let mut rest = contents;
    while !rest.is_empty() {
        let (next, after) = element(rest)?;
        found.push(next);
        rest = after;
    }
    Some(found)
}

/// An OBJECT IDENTIFIER's contents in dotted form, as OpenSSL prints an unnamed one.
pub(super) fn dotted_oid(contents: &[u8]) -> Option<String> {
    let mut arcs: Vec<u128> = Vec::new();
    let mut arc: u128 = 0;
    for (i, &byte) in contents.iter().enumerate() {
        arc = arc.checked_mul(128)? | u128::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            arcs.push(arc);
            arc = 0;
        } else if i + 1 == contents.len() {
            return None;
        }
    }
    let (&first, rest) = arcs.split_first()?;
    let (top, second) = match first {
        0..40 => (0, first),
        40..80 => (1, first - 40),
        _ => (2, first - 80),
    };
    let mut dotted = format!("{top}.{second}");
    for arc in rest {
        dotted.push('.');
        dotted.push_str(&arc.to_string());
    }
    Some(dotted)
}

/// What Puppet reads from a certificate: the subject's common name and every extension's
/// OID (dotted) and value (the contents of its `extnValue` OCTET STRING).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct CertificateParts<'a> {
    pub(super) common_name: Option<&'a [u8]>,
    pub(super) extensions: Vec<(String, &'a [u8])>,
}

/// Reads `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }`
/// (RFC 5280, 4.1).
pub(super) fn certificate(der: &[u8]) -> Option<CertificateParts<'_>> {
    let outer = whole(der).filter(|e| e.tag == SEQUENCE)?;
    let tbs = children(outer.contents)?.into_iter().next()?;
    let mut fields = children(tbs.contents)?.into_iter().peekable();
    fields.next_if(|f| f.tag == 0xa0); // [0] version
    // serialNumber, signature, issuer, validity, then subject
    let subject = fields.nth(4).filter(|f| f.tag == SEQUENCE)?;
    let mut extensions = Vec::new();
    for field in fields {
        if field.tag != 0xa3 {
            continue; // subjectPublicKeyInfo, [1] and [2] unique ids
        }
        let list = whole(field.contents).filter(|e| e.tag == SEQUENCE)?;
        for extension in children(list.contents)? {
            let parts = children(extension.contents)?;
            let oid = parts.first().filter(|p| p.tag == OID)?;
            let value = parts.last().filter(|p| p.tag == OCTET_STRING)?;
            extensions.push((dotted_oid(oid.contents)?, value.contents));
        }
    }
    Some(CertificateParts {
        common_name: common_name(subject.contents)?,
        extensions,
    })
}

/// The first common name (2.5.4.3) of a Name's RDN sequence, as Puppet takes it; its
/// string's contents.
fn common_name(rdns: &[u8]) -> Option<Option<&[u8]>> {
    for rdn in children(rdns)? {
        if rdn.tag != SET {
            return None;
        }
        for attribute in children(rdn.contents)? {
            let parts = children(attribute.contents)?;
            if let [oid, value] = parts[..]
                && oid.tag == OID
                && oid.contents == [0x55, 0x04, 0x03]
            {
                return Some(Some(value.contents));
            }
        }
    }
    Some(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_oids_as_openssl_prints_them() {
        let oid = |bytes: &[u8]| dotted_oid(bytes);
        // 1.3.6.1.4.1.34380.1.1.13 (pp_role)
        assert_eq!(
            oid(&[0x2b, 6, 1, 4, 1, 0x82, 0x8c, 0x4c, 1, 1, 13]).as_deref(),
            Some("1.3.6.1.4.1.34380.1.1.13")
        );
        assert_eq!(oid(&[0x55, 4, 3]).as_deref(), Some("2.5.4.3"));
        assert_eq!(oid(&[0x2a, 3, 4, 5]).as_deref(), Some("1.2.3.4.5"));
        assert_eq!(oid(&[0x88, 0x37, 1]).as_deref(), Some("2.999.1"));
        assert_eq!(oid(&[0x2b, 0x86]), None, "an arc cut short");
        assert_eq!(oid(&[]), None);
    }

    #[test]
    fn elements_are_whole_or_nothing() {
        assert_eq!(
            whole(&[0x0c, 2, b'd', b'b']),
            Some(Element {
                tag: 0x0c,
                contents: b"db"
            })
        );
        assert_eq!(whole(&[0x0c, 2, b'd', b'b', 0]), None, "trailing data");
        assert_eq!(whole(&[0x0c, 3, b'd', b'b']), None, "cut short");
        assert_eq!(whole(&[0x0c, 0x80, b'd', 0, 0]), None, "indefinite length");
        assert_eq!(whole(b"hello"), None, "not DER");
        let long = [&[0x04, 0x81, 200][..], &[7u8; 200]].concat();
        assert_eq!(whole(&long).map(|e| e.contents.len()), Some(200));
    }
}
