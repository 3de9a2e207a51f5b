//! Pure domain types: what enc stores and serves, independent of HTTP and storage.

mod activity;
mod classification;
mod history;
mod names;
mod resources;
pub mod rule;
mod token;
mod tree;
mod validation;
mod view;

pub use activity::{
    Activity, ActivityType, EARLIEST, Hours, MAX_DESCRIPTION as MAX_ACTIVITY_DESCRIPTION, Summary,
    Total, parse_work_date, summarize,
};
pub use classification::{
    ChainExplanation, Classification, Conflict, ConflictValue, Explanation, Overridden, Source,
    ValueExplanation, classify, classify_all, explain_chain,
};
pub use history::{
    ClassificationDiff, EnvironmentChange, Operation, ParameterChange, Revision,
    diff as classification_diff,
};
pub use names::{
    Certname, ClassName, ClusterName, EnvironmentName, GroupName, Label, ParamName, TokenName,
};
pub use resources::{Environment, EnvironmentKey, Meta, Node, NodeFacts, NodeGroup, Stored, now};
pub use token::{Scope, Token};
pub use tree::{Chain, GroupTree, MAX_DEPTH, TreeError, Why};
pub use validation::{FieldError, Fields};
pub use view::{Lens, RuleView};

use std::collections::BTreeMap;

/// Top-scope variables or a class's parameters: name -> any JSON value.
pub type Parameters = BTreeMap<ParamName, serde_json::Value>;

/// Puppet classes with their parameters.
pub type Classes = BTreeMap<ClassName, Parameters>;
