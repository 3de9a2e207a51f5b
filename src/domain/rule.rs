//! Group rules over a node's facts, in Puppet Enterprise's JSON grammar:
//!
//! ```text
//! condition : ["and", condition, ...] | ["or", condition, ...] | ["not", condition]
//!           | [operator, fact-path, value]
//! operator  : "=" | "~" | ">" | ">=" | "<" | "<="
//! fact-path : "name" (the certname) | [("fact" | "trusted"), field, field-or-index...]
//! ```
//!
//! `=` compares the fact's text (a number or boolean as JSON writes it); `~` matches a regex
//! against it (Rust's linear-time engine, size-limited); the numeric operators compare as
//! numbers, and a fact that is not a number (or numeric text) does not match. A bare field
//! other than `name` is a top-level fact, as in PE's older rules.

use std::fmt;

use regex::Regex;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// The deepest nesting a rule may have.
pub const MAX_DEPTH: usize = 16;
/// The most conditions and operations a rule may hold.
pub const MAX_TERMS: usize = 256;
/// The longest regex a rule may hold, in bytes.
pub const MAX_REGEX: usize = 1024;
/// The most memory one compiled regex may take.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Equals,
    Matches,
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
}

impl Operator {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "=" => Self::Equals,
            "~" => Self::Matches,
            ">" => Self::Greater,
            ">=" => Self::GreaterOrEqual,
            "<" => Self::Less,
            "<=" => Self::LessOrEqual,
            _ => return None,
        })
    }

    fn numeric(self) -> bool {
        !matches!(self, Self::Equals | Self::Matches)
    }
}

/// Where a fact comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FactPath {
    /// The certname.
    Name,
    /// `["fact", ...]`, or `["trusted", ...]` when `trusted`; each step a key or an index.
    Path { trusted: bool, steps: Vec<PathStep> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathStep {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone)]
pub enum Rule {
    And(Vec<Rule>),
    Or(Vec<Rule>),
    Not(Box<Rule>),
    Compare {
        operator: Operator,
        path: FactPath,
        value: String,
        /// The regex of `~`, or the number of a numeric operator.
        regex: Option<Regex>,
        number: Option<f64>,
    },
}

/// Why a rule is refused: where in it (as indexes, e.g. `[1, 2]`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub at: Vec<usize>,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at: String = self.at.iter().map(|i| format!("[{i}]")).collect();
        if at.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "at rule{at}: {}", self.message)
        }
    }
}

struct Parser {
    terms: usize,
}

fn refuse<T>(at: &[usize], message: impl Into<String>) -> Result<T, RuleError> {
    Err(RuleError {
        at: at.to_vec(),
        message: message.into(),
    })
}

fn at_child(at: &[usize], i: usize) -> Vec<usize> {
    let mut child = at.to_vec();
    child.push(i);
    child
}

impl Parser {
    fn condition(&mut self, value: &Value, at: &[usize]) -> Result<Rule, RuleError> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return refuse(at, format!("a rule holds at most {MAX_TERMS} terms"));
        }
        if at.len() > MAX_DEPTH {
            return refuse(at, format!("a rule nests at most {MAX_DEPTH} deep"));
        }
        let Some(items) = value.as_array() else {
            return refuse(
                at,
                "expected an array such as [\"=\", [\"fact\", \"os\", \"family\"], \"Debian\"]",
            );
        };
        let Some(head) = items.first().and_then(Value::as_str) else {
            return refuse(
                at,
                "must begin with an operator: and, or, not, =, ~, >, >=, <, <=",
            );
        };
        match head {
            "and" | "or" => {
                if items.len() < 2 {
                    return refuse(at, format!("{head} needs at least one condition"));
                }
                let mut rules = Vec::new();
                for (i, item) in items.iter().enumerate().skip(1) {
                    rules.push(self.condition(item, &at_child(at, i))?);
                }
                Ok(if head == "and" {
                    Rule::And(rules)
                } else {
                    Rule::Or(rules)
                })
            }
            "not" => {
                if items.len() != 2 {
                    return refuse(at, "not takes exactly one condition");
                }
                Ok(Rule::Not(Box::new(
                    self.condition(&items[1], &at_child(at, 1))?,
                )))
            }
            other => {
                let Some(operator) = Operator::parse(other) else {
                    return refuse(
                        &at_child(at, 0),
                        format!("unknown operator {other:?}: and, or, not, =, ~, >, >=, <, <="),
                    );
                };
                if items.len() != 3 {
                    return refuse(at, format!("{other} takes a fact path and a value"));
                }
                let path = fact_path(&items[1], &at_child(at, 1))?;
                let value = match &items[2] {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return refuse(&at_child(at, 2), "the value must be a string"),
                };
                let (mut regex, mut number) = (None, None);
                if operator == Operator::Matches {
                    if value.len() > MAX_REGEX {
                        return refuse(
                            &at_child(at, 2),
                            format!("a regex holds at most {MAX_REGEX} bytes"),
                        );
                    }
                    let compiled = regex::RegexBuilder::new(&value)
                        .size_limit(REGEX_SIZE_LIMIT)
                        .dfa_size_limit(REGEX_SIZE_LIMIT)
                        .build();
                    match compiled {
                        Ok(compiled) => regex = Some(compiled),
                        Err(e) => {
                            let reason = e.to_string();
                            let first = reason.lines().last().unwrap_or("").trim().to_owned();
                            return refuse(
                                &at_child(at, 2),
                                format!("not a usable regex: {first}"),
                            );
                        }
                    }
                }
                if operator.numeric() {
                    match value.trim().parse::<f64>() {
                        Ok(n) if n.is_finite() => number = Some(n),
                        _ => {
                            return refuse(
                                &at_child(at, 2),
                                format!("{other} compares numbers: {value:?} is not one"),
                            );
                        }
                    }
                }
                Ok(Rule::Compare {
                    operator,
                    path,
                    value,
                    regex,
                    number,
                })
            }
        }
    }
}

fn fact_path(value: &Value, at: &[usize]) -> Result<FactPath, RuleError> {
    match value {
        Value::String(name) if name == "name" => Ok(FactPath::Name),
        Value::String(fact) if !fact.is_empty() => Ok(FactPath::Path {
            trusted: false,
            steps: vec![PathStep::Key(fact.clone())],
        }),
        Value::Array(parts) => {
            let trusted = match parts.first().and_then(Value::as_str) {
                Some("fact") => false,
                Some("trusted") => true,
                _ => {
                    return refuse(
                        &at_child(at, 0),
                        "a fact path begins with \"fact\" or \"trusted\"",
                    );
                }
            };
            if parts.len() < 2 || parts.len() > 1 + MAX_DEPTH {
                return refuse(at, format!("a fact path names 1 to {MAX_DEPTH} fields"));
            }
            let mut steps = Vec::new();
            for (i, part) in parts.iter().enumerate().skip(1) {
                steps.push(match part {
                    Value::String(key) if i == 1 && key.is_empty() => {
                        return refuse(&at_child(at, i), "a fact name is not empty");
                    }
                    Value::String(key) => PathStep::Key(key.clone()),
                    Value::Number(n) if i > 1 && n.as_u64().is_some() => {
                        PathStep::Index(n.as_u64().unwrap_or_default() as usize)
                    }
                    _ => {
                        return refuse(
                            &at_child(at, i),
                            "a field name, or an array index after the first",
                        );
                    }
                });
            }
            Ok(FactPath::Path { trusted, steps })
        }
        _ => refuse(
            at,
            "a fact path: \"name\", or [\"fact\", ...] or [\"trusted\", ...]",
        ),
    }
}

/// Parses and checks a rule.
pub fn parse(value: &Value) -> Result<Rule, RuleError> {
    Parser { terms: 0 }.condition(value, &[])
}

/// What a rule is matched against.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub name: &'a str,
    pub facts: &'a Map<String, Value>,
    pub trusted: &'a Map<String, Value>,
}

impl Subject<'_> {
    fn lookup(&self, path: &FactPath) -> Option<Value> {
        match path {
            FactPath::Name => Some(Value::String(self.name.to_owned())),
            FactPath::Path { trusted, steps } => {
                let root = if *trusted { self.trusted } else { self.facts };
                let mut steps = steps.iter();
                let mut current = match steps.next()? {
                    PathStep::Key(key) => root.get(key)?,
                    PathStep::Index(_) => return None,
                };
                for step in steps {
                    current = match (step, current) {
                        (PathStep::Key(key), Value::Object(map)) => map.get(key)?,
                        (PathStep::Index(i), Value::Array(items)) => items.get(*i)?,
                        _ => return None,
                    };
                }
                Some(current.clone())
            }
        }
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
        _ => None,
    }
}

/// How a rule fared on a node: each term, whether it matched, and the fact value it saw.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RuleOutcome {
    /// `and`, `or`, `not`, or the operator.
    pub term: String,
    pub matched: bool,
    /// For an operator: the fact path and value asked for, and the value the node had.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub fact: Option<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(no_recursion)]
    pub of: Vec<RuleOutcome>,
}

impl fmt::Display for FactPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FactPath::Name => f.write_str("name"),
            FactPath::Path { trusted, steps } => {
                f.write_str(if *trusted { "trusted" } else { "facts" })?;
                for step in steps {
                    match step {
                        PathStep::Key(key) => write!(f, ".{key}")?,
                        PathStep::Index(i) => write!(f, "[{i}]")?,
                    }
                }
                Ok(())
            }
        }
    }
}

impl Rule {
    /// Every path the rule reads, the certname (`name`) too.
    pub fn paths<'a>(&'a self, found: &mut Vec<&'a FactPath>) {
        match self {
            Rule::And(rules) | Rule::Or(rules) => rules.iter().for_each(|r| r.paths(found)),
            Rule::Not(rule) => rule.paths(found),
            Rule::Compare { path, .. } => found.push(path),
        }
    }

    pub fn matches(&self, subject: &Subject<'_>) -> bool {
        match self {
            Rule::And(rules) => rules.iter().all(|r| r.matches(subject)),
            Rule::Or(rules) => rules.iter().any(|r| r.matches(subject)),
            Rule::Not(rule) => !rule.matches(subject),
            Rule::Compare {
                operator,
                path,
                value,
                regex,
                number: wanted,
            } => {
                let Some(fact) = subject.lookup(path) else {
                    return false;
                };
                compare(*operator, &fact, value, regex.as_ref(), *wanted)
            }
        }
    }

    /// The outcome of every term, for `explain`.
    pub fn explain(&self, subject: &Subject<'_>) -> RuleOutcome {
        let group = |term: &str, of: Vec<RuleOutcome>, matched: bool| RuleOutcome {
            term: term.to_owned(),
            matched,
            path: None,
            value: None,
            fact: None,
            of,
        };
        match self {
            Rule::And(rules) | Rule::Or(rules) => {
                let of: Vec<_> = rules.iter().map(|r| r.explain(subject)).collect();
                let and = matches!(self, Rule::And(_));
                let matched = if and {
                    of.iter().all(|o| o.matched)
                } else {
                    of.iter().any(|o| o.matched)
                };
                group(if and { "and" } else { "or" }, of, matched)
            }
            Rule::Not(rule) => {
                let inner = rule.explain(subject);
                let matched = !inner.matched;
                group("not", vec![inner], matched)
            }
            Rule::Compare {
                operator,
                path,
                value,
                ..
            } => RuleOutcome {
                term: match operator {
                    Operator::Equals => "=",
                    Operator::Matches => "~",
                    Operator::Greater => ">",
                    Operator::GreaterOrEqual => ">=",
                    Operator::Less => "<",
                    Operator::LessOrEqual => "<=",
                }
                .to_owned(),
                matched: self.matches(subject),
                path: Some(path.to_string()),
                value: Some(value.clone()),
                fact: subject.lookup(path),
                of: Vec::new(),
            },
        }
    }
}

fn compare(
    operator: Operator,
    fact: &Value,
    value: &str,
    regex: Option<&Regex>,
    wanted: Option<f64>,
) -> bool {
    match operator {
        Operator::Equals => text(fact).is_some_and(|t| t == value),
        Operator::Matches => match (text(fact), regex) {
            (Some(t), Some(regex)) => regex.is_match(&t),
            _ => false,
        },
        _ => {
            let (Some(have), Some(wanted)) = (number(fact), wanted) else {
                return false;
            };
            match operator {
                Operator::Greater => have > wanted,
                Operator::GreaterOrEqual => have >= wanted,
                Operator::Less => have < wanted,
                _ => have <= wanted,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn facts() -> Map<String, Value> {
        json!({
            "os": {"family": "RedHat", "release": {"major": "8"}},
            "processorcount": 4,
            "memorysize_mb": "7822.44",
            "is_virtual": true,
            "pe_server_version": "2023.8.0",
            "networking": {"interfaces": [{"name": "eth0"}, {"name": "eth1"}]},
            "kernel": "Linux",
        })
        .as_object()
        .unwrap()
        .clone()
    }

    fn trusted() -> Map<String, Value> {
        json!({"extensions": {"pp_role": "puppet_master", "pp_environment": "production"}})
            .as_object()
            .unwrap()
            .clone()
    }

    fn matches(rule: Value) -> bool {
        let (facts, trusted) = (facts(), trusted());
        let subject = Subject {
            name: "web01.example.com",
            facts: &facts,
            trusted: &trusted,
        };
        parse(&rule).expect("a valid rule").matches(&subject)
    }

    fn refused(rule: Value) -> String {
        parse(&rule).expect_err("refused").to_string()
    }

    #[test]
    fn the_examples_of_pe_documentation() {
        // PE's own examples of the rule grammar.
        assert!(matches(json!([
            "and",
            ["~", ["fact", "pe_server_version"], ".+"],
            ["=", ["trusted", "extensions", "pp_role"], "puppet_master"]
        ])));
        assert!(matches(json!(["=", ["fact", "os", "family"], "RedHat"])));
        assert!(matches(json!([
            "or",
            ["=", "name", "node1"],
            ["=", "name", "web01.example.com"]
        ])));
        assert!(matches(json!(["~", "name", "^web\\d+\\.example\\.com$"])));
        assert!(matches(json!([">=", ["fact", "processorcount"], "4"])));
        assert!(!matches(json!([">", ["fact", "processorcount"], "4"])));
        assert!(matches(json!([
            "not",
            ["=", ["fact", "kernel"], "windows"]
        ])));
        assert!(matches(json!([
            "=",
            ["fact", "os", "release", "major"],
            "8"
        ])));
        assert!(matches(json!([
            "=",
            ["fact", "networking", "interfaces", 1, "name"],
            "eth1"
        ])));
        assert!(
            matches(json!(["=", "kernel", "Linux"])),
            "a bare field is a top-level fact"
        );
    }

    #[test]
    fn numbers_and_text_are_coerced_as_pe_does() {
        assert!(
            matches(json!(["<", ["fact", "memorysize_mb"], "8192"])),
            "numeric text"
        );
        assert!(
            matches(json!(["=", ["fact", "processorcount"], "4"])),
            "a number as text"
        );
        assert!(
            matches(json!(["=", ["fact", "is_virtual"], "true"])),
            "a boolean as text"
        );
        assert!(
            !matches(json!([">", ["fact", "kernel"], "1"])),
            "not a number: no match"
        );
        assert!(
            !matches(json!(["=", ["fact", "os"], "RedHat"])),
            "a structure is no text"
        );
        assert!(
            !matches(json!(["=", ["fact", "missing"], "x"])),
            "a missing fact matches nothing"
        );
        assert!(!matches(json!([
            "not",
            ["not", ["=", ["fact", "missing"], "x"]]
        ])));
    }

    #[test]
    fn malformed_rules_say_where() {
        assert_eq!(
            refused(json!([
                "and",
                ["=", ["fact", "a"], "b"],
                ["==", ["fact", "a"], "b"]
            ])),
            "at rule[2][0]: unknown operator \"==\": and, or, not, =, ~, >, >=, <, <="
        );
        assert!(refused(json!(["=", ["facts", "a"], "b"])).starts_with("at rule[1][0]:"));
        assert!(
            refused(json!([">", ["fact", "a"], "many"]))
                .starts_with("at rule[2]: > compares numbers")
        );
        assert!(
            refused(json!(["~", "name", "(unclosed"]))
                .starts_with("at rule[2]: not a usable regex")
        );
        assert!(refused(json!(["not"])).contains("exactly one"));
        assert!(refused(json!(["and"])).contains("at least one"));
        assert!(refused(json!("name")).contains("expected an array"));
        assert!(refused(json!(["=", "name"])).contains("a fact path and a value"));
        assert!(refused(json!(["=", ["fact", 0], "x"])).starts_with("at rule[1][1]:"));
    }

    #[test]
    fn rules_and_regexes_are_bounded() {
        let mut deep = json!(["=", "name", "x"]);
        for _ in 0..MAX_DEPTH + 1 {
            deep = json!(["not", deep]);
        }
        assert!(refused(deep).contains("nests at most"));
        let wide: Vec<Value> = std::iter::once(json!("or"))
            .chain((0..MAX_TERMS).map(|i| json!(["=", "name", format!("n{i}")])))
            .collect();
        assert!(refused(Value::Array(wide)).contains("at most 256 terms"));
        let long = "a".repeat(MAX_REGEX + 1);
        assert!(refused(json!(["~", "name", long])).contains("at most 1024 bytes"));
        // Within the length, a regex that compiles too large is refused, not run.
        assert!(refused(json!(["~", "name", "(\\w{100}){100}"])).contains("not a usable regex"));
    }

    #[test]
    fn explain_shows_each_term_and_the_value_seen() {
        let (facts, trusted) = (facts(), trusted());
        let subject = Subject {
            name: "web01.example.com",
            facts: &facts,
            trusted: &trusted,
        };
        let rule = parse(&json!([
            "and",
            ["=", ["fact", "os", "family"], "Debian"],
            [">=", ["fact", "processorcount"], "2"]
        ]))
        .unwrap();
        let outcome = rule.explain(&subject);
        assert!(!outcome.matched);
        assert_eq!(outcome.of[0].path.as_deref(), Some("facts.os.family"));
        assert_eq!(outcome.of[0].fact, Some(json!("RedHat")));
        assert!(!outcome.of[0].matched);
        assert!(outcome.of[1].matched);
    }
}
