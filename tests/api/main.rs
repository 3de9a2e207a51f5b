//! Integration tests: one binary, driving the same router the service serves.

mod alb;
mod as_code;
mod as_code_cli;
mod binary;
mod browser;
mod classification;
mod dynamodb_faults;
mod environments;
mod errors;
mod helpers;
mod history;
mod identity;
mod limits;
mod metrics_form;
mod migration;
mod node_groups;
mod nodes;
mod observability;
mod openapi;
mod pagination;
mod persistence;
mod puppet;
mod rules;
mod snapshot;
mod store_conformance;
mod yaml;
