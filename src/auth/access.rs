//! What each route needs, read from the OpenAPI document: every operation declares a scope
//! (or none), and a write previewed with `dry_run=true` needs only `plan`.

use std::collections::HashMap;

use axum::http::Method;
use serde_json::Value;

use super::Identity;
use crate::domain::Scope;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Nothing,
    Scope(Scope),
    /// Either scope will do (a classification is read by people and by Puppet servers).
    Either(Scope, Scope),
}

impl Needs {
    /// Whether holding `scope` is enough.
    pub fn granted_by(self, scope: Scope) -> bool {
        match self {
            Needs::Nothing => true,
            Needs::Scope(needed) => scope.grants(needed),
            Needs::Either(one, other) => scope.grants(one) || scope.grants(other),
        }
    }

    pub(super) fn granted_to(self, identity: &Identity) -> bool {
        identity.scopes.iter().any(|s| self.granted_by(*s))
    }
}

impl std::fmt::Display for Needs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Needs::Nothing => f.write_str("nothing"),
            Needs::Scope(scope) => write!(f, "the scope {scope}"),
            Needs::Either(one, other) => write!(f, "the scope {one} or {other}"),
        }
    }
}

/// Every documented operation's needs, read from the OpenAPI document.
#[derive(Debug, Default)]
pub struct Access {
    /// By route, what each of its methods needs (looked up without a copy of the route).
    routes: HashMap<String, Vec<(Method, Needs)>>,
    /// The writes that take `?dry_run=true` (by route, their methods): previewed, they need
    /// only the scope `plan`.
    previewable: HashMap<String, Vec<Method>>,
}

/// Routes served beside the documented API, open to all: the documentation itself.
pub(crate) fn is_documentation(route: &str) -> bool {
    route == "/api-docs/openapi.json" || route == "/swagger-ui" || route.starts_with("/swagger-ui/")
}

/// `/nodes/` and `/nodes` are one collection.
fn normalized(route: &str) -> &str {
    match route.strip_suffix('/') {
        Some(trimmed) if !trimmed.is_empty() => trimmed,
        _ => route,
    }
}

impl Access {
    pub fn from_openapi(document: &Value) -> Result<Self, String> {
        let mut access = Access::default();
        let paths = document["paths"]
            .as_object()
            .ok_or("the document has no paths")?;
        for (path, item) in paths {
            for (method, operation) in item.as_object().into_iter().flatten() {
                let Ok(method) = method.to_ascii_uppercase().parse::<Method>() else {
                    continue;
                };
                let needs = needs_of(operation).map_err(|e| format!("{method} {path}: {e}"))?;
                let methods = access
                    .routes
                    .entry(normalized(path).to_owned())
                    .or_default();
                methods.retain(|(m, _)| *m != method);
                methods.push((method.clone(), needs));
                let dry_run = operation["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["name"] == "dry_run" && p["in"] == "query");
                if dry_run && needs == Needs::Scope(Scope::Write) {
                    let methods = access
                        .previewable
                        .entry(normalized(path).to_owned())
                        .or_default();
                    methods.retain(|m| *m != method);
                    methods.push(method);
                }
            }
        }
        Ok(access)
    }

    /// What `method` on the matched `route` needs; `None` for a route nobody declared.
    pub fn needs(&self, method: &Method, route: &str) -> Option<Needs> {
        let route = normalized(route);
        // axum answers HEAD with the GET handler: it needs what GET needs.
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        let methods = self.routes.get(route);
        if let Some((_, needs)) = methods.into_iter().flatten().find(|(m, _)| m == method) {
            return Some(*needs);
        }
        // Another method on a documented path is answered 405 by the router.
        (methods.is_some() || is_documentation(route)).then_some(Needs::Nothing)
    }

    /// What `method` on `route` needs when asked with `query`: a write previewed
    /// (`dry_run=true`, and no other spelling of it) needs only `plan`, which `write` grants.
    pub fn needs_asked(&self, method: &Method, route: &str, query: Option<&str>) -> Option<Needs> {
        let needs = self.needs(method, route);
        let previewable = self
            .previewable
            .get(normalized(route))
            .is_some_and(|methods| methods.contains(method));
        match needs {
            Some(Needs::Scope(Scope::Write)) if previewable && asks_dry_run(query) => {
                Some(Needs::Scope(Scope::Plan))
            }
            other => other,
        }
    }

    /// The methods a route answers, for `Allow` (HEAD with GET).
    pub fn methods(&self, route: &str) -> Vec<&'static str> {
        let route = normalized(route);
        let mut methods: Vec<&'static str> = self
            .routes
            .get(route)
            .into_iter()
            .flatten()
            .map(|(method, _)| method_name(method))
            .collect();
        if methods.contains(&"GET") {
            methods.push("HEAD");
        }
        methods.sort_unstable();
        methods
    }

    pub fn operations(&self) -> impl Iterator<Item = (&Method, &str, Needs)> {
        self.routes
            .iter()
            .flat_map(|(p, methods)| methods.iter().map(|(m, n)| (m, p.as_str(), *n)))
    }
}

/// Whether a query asks for a dry run as the handler will read it: `dry_run=true`, every time
/// it is named. Any other spelling (`%74rue`, `dry%5Frun`) is not taken for one here: at
/// worst a previewing token is refused, never a write let through.
fn asks_dry_run(query: Option<&str>) -> bool {
    let mut asked = false;
    for pair in query.unwrap_or_default().split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "dry_run" {
            if value != "true" {
                return false;
            }
            asked = true;
        } else if key.contains('%') || key.contains('+') {
            // An encoded name might decode to `dry_run`.
            return false;
        }
    }
    asked
}

fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        _ => "OPTIONS",
    }
}

/// An operation's `security`: `[{}]` is open, `[{"bearer": ["scope"]}]` needs the scope.
fn needs_of(operation: &Value) -> Result<Needs, String> {
    let requirements = operation["security"]
        .as_array()
        .ok_or("declares no security (a scope, or `security(())` for none)")?;
    let mut scopes = Vec::new();
    for requirement in requirements {
        let Some(schemes) = requirement.as_object() else {
            return Err("a security requirement is not an object".into());
        };
        if schemes.is_empty() {
            return Ok(Needs::Nothing);
        }
        let names = schemes["bearer"]
            .as_array()
            .ok_or("names no bearer scopes")?;
        for name in names {
            scopes.push(Scope::parse(name.as_str().unwrap_or_default())?);
        }
    }
    match scopes[..] {
        [] => Err("names no scope".into()),
        [one] => Ok(Needs::Scope(one)),
        [one, other] => Ok(Needs::Either(one, other)),
        _ => Err("names more than two scopes".into()),
    }
}
