//! Validated names. Each type can only hold a value that follows its rule, so code that
//! receives one never checks again.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

fn is_lower_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')
}

/// `.` and `..` name no object: in a path they mean this or the parent directory.
fn is_dot_name(s: &str) -> bool {
    s == "." || s == ".."
}

fn check_certname(s: &str) -> Result<(), String> {
    if (1..=253).contains(&s.len()) && s.chars().all(is_lower_name_char) && !is_dot_name(s) {
        Ok(())
    } else {
        Err("must be 1 to 253 characters of lowercase letters, digits, '.', '-' or '_', and not . or ..".into())
    }
}

fn check_environment(s: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    if (1..=255).contains(&s.len()) && s.chars().all(ok) {
        Ok(())
    } else {
        Err("must be 1 to 255 characters of lowercase letters, digits or '_' (Puppet's environment name rule)".into())
    }
}

/// Node group names are free text, as in Puppet Enterprise ("All Nodes"): printable, no `/`.
fn check_group(s: &str) -> Result<(), String> {
    let printable = |c: char| !c.is_control() && !matches!(c, '/' | '\u{2028}' | '\u{2029}');
    let length = s.chars().count();
    let ok =
        (1..=255).contains(&length) && s.chars().all(printable) && s.trim() == s && !is_dot_name(s);
    if ok {
        Ok(())
    } else {
        Err("must be 1 to 255 printable characters without '/', without leading or trailing spaces, and not . or ..".into())
    }
}

fn check_class(s: &str) -> Result<(), String> {
    let segment_ok = |seg: &str| {
        let mut chars = seg.chars();
        chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    if s.len() <= 255 && s.split("::").all(segment_ok) {
        Ok(())
    } else {
        Err("must be segments of a lowercase letter followed by lowercase letters, digits or '_', joined by '::' (e.g. roles::base_server)".into())
    }
}

fn check_parameter(s: &str) -> Result<(), String> {
    let mut chars = s.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if s.len() <= 255 && first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err("must start with a lowercase letter or '_' followed by letters, digits or '_'".into())
    }
}

fn check_token_name(s: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_');
    let first = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if (1..=64).contains(&s.len()) && first && s.chars().all(ok) {
        Ok(())
    } else {
        Err("must be 1 to 64 characters of lowercase letters, digits, '.', '-' or '_', starting with a letter or digit".into())
    }
}

fn check_label(s: &str) -> Result<(), String> {
    let length = s.chars().count();
    let trimmed = s.trim() == s;
    if (1..=100).contains(&length) && trimmed && !s.chars().any(char::is_control) {
        Ok(())
    } else {
        Err("must be 1 to 100 characters, without surrounding spaces or control characters".into())
    }
}

/// A name type: its rule as code (`$check`) and, for the OpenAPI document, as a pattern and a
/// length in characters (a test holds the two to the same answers).
macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $check:path, $example:literal, $pattern:tt, $max:tt) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(try_from = "String", into = "String")]
        #[schema(value_type = String, example = $example, pattern = $pattern, min_length = 1, max_length = $max)]
        pub struct $name(String);

        impl $name {
            /// Accepts `s` if it follows the rule, or says why not.
            pub fn parse(s: &str) -> Result<Self, String> {
                $check(s).map(|()| Self(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                $check(&s).map(|()| Self(s))
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A Puppet certname: the node's unique name.
    Certname,
    check_certname,
    "web01.example.com",
    r"^(?!\.{1,2}$)[a-z0-9._-]+$",
    253
);
name_type!(
    /// A Puppet environment name.
    EnvironmentName,
    check_environment,
    "production",
    r"^[a-z0-9_]+$",
    255
);
name_type!(
    /// The name of a Puppet cluster (a set of Puppet servers sharing environments).
    ClusterName,
    check_certname,
    "puppet-eu-west-1",
    r"^(?!\.{1,2}$)[a-z0-9._-]+$",
    253
);
name_type!(
    /// The name of a node group.
    GroupName,
    check_group,
    "All Nodes",
    r"^(?!\.{1,2}$)(?!\s)(?!.*\s$)[^/\u0000-\u001f\u007f-\u009f\u2028\u2029]+$",
    255
);
name_type!(
    /// A Puppet class name such as `roles::base_server`.
    ClassName,
    check_class,
    "profile::nginx",
    r"^[a-z][a-z0-9_]*(::[a-z][a-z0-9_]*)*$",
    255
);
name_type!(
    /// A class parameter or top-scope variable name.
    ParamName,
    check_parameter,
    "worker_processes",
    r"^[a-z_][A-Za-z0-9_]*$",
    255
);

name_type!(
    /// The name of an API token, e.g. `puppet-eu-1`: part of the token's secret, so plain.
    TokenName,
    check_token_name,
    "puppet-eu-1",
    r"^[a-z0-9][a-z0-9._-]*$",
    64
);

name_type!(
    /// A person's, customer's or project's name as typed into the metrics form.
    Label,
    check_label,
    "ACME Corp",
    r"^(?!\s)(?!.*\s$)[^\u0000-\u001f\u007f-\u009f]+$",
    100
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(Label::parse("ACME Corp / Ünïcode & <b>").is_ok());
        for bad in ["", " padded", "padded ", "tab\tinside", &"x".repeat(101)] {
            assert!(Label::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn certnames() {
        for ok in [
            "web01",
            "web01.example.com",
            "a",
            "db-1_x",
            &"a".repeat(253),
        ] {
            assert!(Certname::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Web01", "web 01", "web/01", "wéb", &"a".repeat(254)] {
            assert!(Certname::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn environments() {
        assert!(EnvironmentName::parse("production_2").is_ok());
        for bad in ["", "Production", "prod-1", "prod.1"] {
            assert!(EnvironmentName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn clusters_and_groups() {
        assert!(ClusterName::parse("puppet-eu.1_a").is_ok());
        assert!(ClusterName::parse("Puppet").is_err());
        for ok in [
            "Web_Servers-1.a",
            "All Nodes",
            "BT Base Server",
            "Ünïcode 群",
            "a.b",
            "...",
        ] {
            assert!(GroupName::parse(ok).is_ok(), "{ok}");
        }
        let long = "x".repeat(256);
        for bad in [
            "",
            ".",
            "..",
            " padded",
            "padded ",
            "a/b",
            "tab\there",
            "line\u{2028}sep",
            "nul\0",
            &long,
        ] {
            assert!(GroupName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(
            GroupName::parse(&"é".repeat(255)).is_ok(),
            "characters, not bytes"
        );
        for dots in [".", ".."] {
            assert!(Certname::parse(dots).is_err() && ClusterName::parse(dots).is_err());
        }
    }

    #[test]
    fn classes() {
        for ok in ["ntp", "roles::base_server", "a1::b_2::c"] {
            assert!(ClassName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "::ntp",
            "ntp::",
            "Ntp",
            "1ntp",
            "roles:::x",
            "roles::1x",
            "a-b",
        ] {
            assert!(ClassName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parameters() {
        for ok in ["port", "_private", "maxConn_2"] {
            assert!(ParamName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Port", "1port", "max-conn", "a::b"] {
            assert!(ParamName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn token_names() {
        for ok in ["puppet-eu-1", "ci", "a.b_c", "0day"] {
            assert!(TokenName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Puppet", "-x", "has space", "a/b", &"a".repeat(65)] {
            assert!(TokenName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deserialize_checks_the_rule() {
        assert!(serde_json::from_str::<Certname>("\"web01\"").is_ok());
        assert!(serde_json::from_str::<Certname>("\"WEB01\"").is_err());
    }
}
