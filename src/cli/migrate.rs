//! `enc migrate --from-dynamodb`: the earlier ENC's DynamoDB tables written as a
//! classification tree (as `enc export` writes one), which then goes through `enc plan` and
//! `enc apply` as any tree does.
//!
//! The earlier service kept `Environment` items keyed by `EnvironmentName` +
//! `PuppetClusterName`; `NodeGroup` items keyed by `Name` + `Class`, one per class of a group,
//! with that class's parameters as a JSON string in `Parameters`; and `Node` items keyed by
//! `UniqueName` + `NodeGroupName`, with `environment_name` and `puppet_cluster_name`. Each
//! object is checked as the API checks a body. What cannot be mapped is reported with the
//! reason and left out, never guessed: a node found under two groups, a group one of whose
//! classes cannot be read (without it, its nodes would get another classification), a node
//! whose group or environment is not mapped, an attribute enc has no field for.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Map, Value, json};

use super::as_code::write_tree;
use crate::config::Config;
use crate::domain::FieldError;
use crate::handlers::tree::object_file;
use crate::store::dynamodb::DynamoDb;

/// One item of a table.
pub type Item = HashMap<String, AttributeValue>;

/// Items read per scan call, so that a large table shows its progress.
const PAGE: i32 = 1000;

/// `enc migrate --from-dynamodb ...`.
#[derive(Debug, Clone, clap::Args)]
pub struct MigrateArgs {
    /// Read the earlier ENC's DynamoDB tables (the one source there is).
    #[arg(long, required = true)]
    pub from_dynamodb: bool,
    /// Its table of nodes (keyed by `UniqueName` + `NodeGroupName`).
    #[arg(long, default_value = "Node")]
    pub node_table: String,
    /// Its table of node groups (keyed by `Name` + `Class`).
    #[arg(long, default_value = "NodeGroup")]
    pub node_group_table: String,
    /// Its table of environments (keyed by `EnvironmentName` + `PuppetClusterName`).
    #[arg(long, default_value = "Environment")]
    pub environment_table: String,
    /// Where those tables are, e.g. DynamoDB Local's `http://127.0.0.1:8000` (default: AWS,
    /// with credentials and region from the standard AWS chain).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// The tree to write: environments/, node_groups/, nodes/ (other YAML files there are
    /// removed, as `enc export` does).
    #[arg(long)]
    pub dir: PathBuf,
}

/// An item left out of the tree (or an attribute left out of an item), and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Unmapped {
    pub table: String,
    /// The item's key attributes, `Name=value`.
    pub item: String,
    pub reason: String,
}

impl std::fmt::Display for Unmapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} item {}: {}", self.table, self.item, self.reason)
    }
}

/// The earlier ENC's data as a tree.
#[derive(Debug, Default)]
pub struct Migration {
    /// The tree's files by path, as `GET /export` gives them.
    pub files: BTreeMap<String, String>,
    pub environments: usize,
    pub groups: usize,
    pub nodes: usize,
    /// Sorted by table and item.
    pub unmapped: Vec<Unmapped>,
}

/// The table names, as given on the command line.
#[derive(Debug, Clone)]
pub struct Tables {
    pub node: String,
    pub node_group: String,
    pub environment: String,
}

/// The names a table's items hold, and those of them mapped into the tree.
struct Names<K> {
    present: BTreeSet<K>,
    mapped: BTreeSet<K>,
}

impl<K: Ord> Names<K> {
    /// Why an object cannot refer to `name` (`shown` as `what`, from `table`), if it cannot.
    fn refused(&self, name: &K, what: String, table: &str) -> Option<String> {
        match (self.mapped.contains(name), self.present.contains(name)) {
            (true, _) => None,
            (false, true) => Some(format!("its {what} is not mapped (see the {table} items)")),
            (false, false) => Some(format!("its {what} is not in table {table}")),
        }
    }
}

/// Attributes each table's items may have.
const ENVIRONMENT_ATTRIBUTES: [&str; 2] = ["EnvironmentName", "PuppetClusterName"];
const GROUP_ATTRIBUTES: [&str; 3] = ["Name", "Class", "Parameters"];
const NODE_ATTRIBUTES: [&str; 4] = [
    "UniqueName",
    "NodeGroupName",
    "environment_name",
    "puppet_cluster_name",
];

fn type_of(value: &AttributeValue) -> &'static str {
    match value {
        AttributeValue::S(_) => "string",
        AttributeValue::N(_) => "number",
        AttributeValue::B(_) => "binary",
        AttributeValue::Bool(_) => "boolean",
        AttributeValue::Null(_) => "null",
        AttributeValue::L(_) => "list",
        AttributeValue::M(_) => "map",
        AttributeValue::Ss(_) => "string set",
        AttributeValue::Ns(_) => "number set",
        AttributeValue::Bs(_) => "binary set",
        _ => "value of an unknown type",
    }
}

fn string<'a>(item: &'a Item, name: &str) -> Result<&'a str, String> {
    match item.get(name) {
        Some(AttributeValue::S(s)) => Ok(s),
        Some(other) => Err(format!("{name} is a {}, not a string", type_of(other))),
        None => Err(format!("has no {name}")),
    }
}

/// The item's key as people read it (what it has of the key attributes).
fn describe(item: &Item, key: [&str; 2]) -> String {
    let part = |name: &str| match item.get(name) {
        Some(AttributeValue::S(s)) => format!("{name}={s}"),
        Some(other) => format!("{name}=({})", type_of(other)),
        None => format!("{name}=(none)"),
    };
    format!("{}, {}", part(key[0]), part(key[1]))
}

fn reasons(errors: &[FieldError]) -> String {
    let one = |e: &FieldError| match e.field.as_str() {
        "" => e.message.clone(),
        field => format!("{field} {}", e.message),
    };
    errors.iter().map(one).collect::<Vec<_>>().join("; ")
}

/// A class's parameters: `Parameters` as a JSON object (none: no parameters).
fn parameters(item: &Item) -> Result<Value, String> {
    match item.get("Parameters") {
        None | Some(AttributeValue::Null(_)) => Ok(json!({})),
        Some(AttributeValue::S(text)) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Ok(Value::Object(map)),
            Ok(Value::Null) => Ok(json!({})),
            Ok(other) => Err(format!(
                "Parameters is JSON but not an object of parameters: {other}"
            )),
            Err(e) => Err(format!("Parameters is not JSON: {e}")),
        },
        Some(other) => Err(format!(
            "Parameters is a {}, not a JSON string",
            type_of(other)
        )),
    }
}

struct Mapper<'a> {
    tables: &'a Tables,
    migration: Migration,
}

impl Mapper<'_> {
    fn leave(&mut self, table: &str, item: String, reason: impl Into<String>) {
        self.migration.unmapped.push(Unmapped {
            table: table.to_owned(),
            item,
            reason: reason.into(),
        });
    }

    /// Reports the attributes an item has that enc has no field for.
    fn extra(&mut self, table: &str, item: &Item, key: [&str; 2], known: &[&str]) {
        let mut extra: Vec<&String> = item
            .keys()
            .filter(|name| !known.contains(&name.as_str()))
            .collect();
        extra.sort();
        for name in extra {
            let reason = format!(
                "attribute {name} is not mapped: enc has no field for it (the item is mapped without it)"
            );
            self.leave(table, describe(item, key), reason);
        }
    }

    /// A table's items by their first key attribute; reports the items without it, and every
    /// item's attributes enc has no field for.
    fn by_first_key<'i>(
        &mut self,
        table: &str,
        items: &'i [Item],
        key: [&str; 2],
        known: &[&str],
    ) -> BTreeMap<&'i str, Vec<&'i Item>> {
        let mut by_name: BTreeMap<&str, Vec<&Item>> = BTreeMap::new();
        for item in items {
            match string(item, key[0]) {
                Ok(name) => by_name.entry(name).or_default().push(item),
                Err(reason) => self.leave(table, describe(item, key), reason),
            }
            self.extra(table, item, key, known);
        }
        by_name
    }

    /// Adds an object's file to the tree, or reports why it cannot be.
    fn add(&mut self, dir: &str, body: Value) -> Result<(), String> {
        let (path, text) = object_file(dir, body).map_err(|e| reasons(&e))?;
        self.migration.files.insert(path, text);
        Ok(())
    }

    fn environments(&mut self, items: &[Item]) -> Names<(String, String)> {
        let table = self.tables.environment.clone();
        let key = ["EnvironmentName", "PuppetClusterName"];
        let (mut present, mut mapped) = (BTreeSet::new(), BTreeSet::new());
        for item in items {
            let read = string(item, key[0]).and_then(|e| Ok((e, string(item, key[1])?)));
            let added = read.and_then(|(e, c)| {
                present.insert((e.to_owned(), c.to_owned()));
                let body = json!({"environment_name": e, "puppet_cluster_name": c});
                self.add("environments", body)?;
                Ok((e.to_owned(), c.to_owned()))
            });
            match added {
                Ok(pair) => {
                    mapped.insert(pair);
                }
                Err(reason) => self.leave(&table, describe(item, key), reason),
            }
            self.extra(&table, item, key, &ENVIRONMENT_ATTRIBUTES);
        }
        self.migration.environments = mapped.len();
        Names { present, mapped }
    }

    fn groups(&mut self, items: &[Item]) -> Names<String> {
        let table = self.tables.node_group.clone();
        let key = ["Name", "Class"];
        let by_name = self.by_first_key(&table, items, key, &GROUP_ATTRIBUTES);
        let present = by_name.keys().map(|name| name.to_string()).collect();
        let mut mapped = BTreeSet::new();
        for (name, items) in by_name {
            let mut classes = Map::new();
            let mut failed = Vec::new();
            for item in &items {
                let class = string(item, key[1]).and_then(|c| Ok((c, parameters(item)?)));
                match class {
                    Ok((class, parameters)) => {
                        classes.insert(class.to_owned(), parameters);
                    }
                    Err(reason) => failed.push((describe(item, key), reason)),
                }
            }
            if !failed.is_empty() {
                let bad: Vec<&str> = failed.iter().map(|(item, _)| item.as_str()).collect();
                for item in &items {
                    let described = describe(item, key);
                    let reason = match failed.iter().find(|(d, _)| *d == described) {
                        Some((_, reason)) => reason.clone(),
                        None => format!(
                            "not mapped because another item of group {name:?} cannot be \
                             ({}): without one of its classes the group would classify its \
                             nodes differently",
                            bad.join("; ")
                        ),
                    };
                    self.leave(&table, described, reason);
                }
                continue;
            }
            match self.add("node_groups", json!({"name": name, "classes": classes})) {
                Ok(()) => {
                    mapped.insert(name.to_owned());
                }
                Err(reason) => {
                    for item in &items {
                        self.leave(&table, describe(item, key), reason.clone());
                    }
                }
            }
        }
        self.migration.groups = mapped.len();
        Names { present, mapped }
    }

    fn nodes(
        &mut self,
        items: &[Item],
        environments: &Names<(String, String)>,
        groups: &Names<String>,
    ) {
        let table = self.tables.node.clone();
        let key = ["UniqueName", "NodeGroupName"];
        let by_name = self.by_first_key(&table, items, key, &NODE_ATTRIBUTES);
        for (name, items) in by_name {
            if items.len() > 1 {
                let under: Vec<String> = items
                    .iter()
                    .map(|i| string(i, key[1]).unwrap_or("(none)").to_owned())
                    .collect();
                for item in &items {
                    let reason = format!(
                        "node {name:?} is under {} groups ({}): an update of the earlier ENC \
                         left more than one item; keep one there, or write its file by hand",
                        items.len(),
                        under.join(", ")
                    );
                    self.leave(&table, describe(item, key), reason);
                }
                continue;
            }
            let item = items[0];
            let node = || -> Result<Value, String> {
                let group = string(item, key[1])?;
                let env = string(item, "environment_name")?;
                let cluster = string(item, "puppet_cluster_name")?;
                let (tables, pair) = (self.tables, (env.to_owned(), cluster.to_owned()));
                let refused = groups
                    .refused(
                        &group.to_owned(),
                        format!("node group {group:?}"),
                        &tables.node_group,
                    )
                    .or_else(|| {
                        let what = format!("environment {env}/{cluster}");
                        environments.refused(&pair, what, &tables.environment)
                    });
                if let Some(reason) = refused {
                    return Err(reason);
                }
                Ok(json!({
                    "unique_name": name,
                    "node_group_name": group,
                    "environment_name": env,
                    "puppet_cluster_name": cluster,
                }))
            };
            let body = node();
            match body.and_then(|body| self.add("nodes", body)) {
                Ok(()) => self.migration.nodes += 1,
                Err(reason) => self.leave(&table, describe(item, key), reason),
            }
        }
    }
}

/// The tree of the earlier ENC's items, and every item (or attribute) it leaves out.
pub fn map(tables: &Tables, environments: &[Item], groups: &[Item], nodes: &[Item]) -> Migration {
    let mut mapper = Mapper {
        tables,
        migration: Migration::default(),
    };
    let environments = mapper.environments(environments);
    let groups = mapper.groups(groups);
    mapper.nodes(nodes, &environments, &groups);
    let mut migration = mapper.migration;
    migration.unmapped.sort();
    migration
}

/// Every item of a table, showing how many are read as it goes.
async fn scan(client: &Client, table: &str) -> Result<Vec<Item>, String> {
    let failed = |e: &dyn std::fmt::Display| format!("table {table}: {e}");
    // DynamoDB's own count (refreshed about every six hours), for progress only: a role that
    // may scan but not describe the table reads it all the same.
    let about = client.describe_table().table_name(table).send().await.ok();
    let total = about.and_then(|a| a.table?.item_count);
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .limit(PAGE)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| failed(&DisplayErrorContext(e)))?;
        items.extend(page.items.unwrap_or_default());
        let of = total.map_or(String::new(), |t| format!(" of about {t}"));
        eprintln!("{table}: {} items read{of}", items.len());
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return Ok(items),
        }
    }
}

/// `enc migrate --from-dynamodb ... --dir D`: 0 when every item is mapped, 2 when the tree
/// is written but something was left out (each listed on stderr), 1 on an error.
pub async fn run(config: &Config, args: &MigrateArgs) -> ExitCode {
    let mut settings = crate::store::dynamodb::DynamoSettings::of(config);
    settings.endpoint = args.endpoint.clone();
    let client = DynamoDb::connect(&settings).await.client().clone();
    let tables = Tables {
        node: args.node_table.clone(),
        node_group: args.node_group_table.clone(),
        environment: args.environment_table.clone(),
    };
    let mut read = Vec::new();
    for table in [&tables.environment, &tables.node_group, &tables.node] {
        match scan(&client, table).await {
            Ok(items) => read.push(items),
            Err(e) => {
                eprintln!("enc: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let migration = map(&tables, &read[0], &read[1], &read[2]);
    for unmapped in &migration.unmapped {
        eprintln!("not mapped: {unmapped}");
    }
    if let Err(e) = write_tree(&args.dir, &migration.files) {
        eprintln!("enc: {e}");
        return ExitCode::FAILURE;
    }
    println!(
        "wrote {} environments, {} node groups and {} nodes to {}; {} not mapped{}",
        migration.environments,
        migration.groups,
        migration.nodes,
        args.dir.display(),
        migration.unmapped.len(),
        match migration.unmapped.is_empty() {
            true => "",
            false => " (listed above)",
        }
    );
    println!("next: enc plan --dir {}", args.dir.display());
    match migration.unmapped.is_empty() {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(attributes: &[(&str, &str)]) -> Item {
        let s = |v: &str| AttributeValue::S(v.to_owned());
        attributes
            .iter()
            .map(|(k, v)| (k.to_string(), s(v)))
            .collect()
    }

    fn tables() -> Tables {
        Tables {
            node: "Node".into(),
            node_group: "NodeGroup".into(),
            environment: "Environment".into(),
        }
    }

    #[test]
    fn a_groups_items_merge_and_what_cannot_map_is_reported() {
        let envs = [item(&[
            ("EnvironmentName", "production"),
            ("PuppetClusterName", "eu"),
        ])];
        let mut numbered = item(&[("Name", "web"), ("Class", "motd")]);
        numbered.insert("Parameters".into(), AttributeValue::N("1".into()));
        let groups = [
            item(&[
                ("Name", "web"),
                ("Class", "nginx"),
                ("Parameters", r#"{"w": 4}"#),
            ]),
            item(&[("Name", "base"), ("Class", "ntp")]),
            numbered,
        ];
        let node = |name: &str, group: &str| {
            item(&[
                ("UniqueName", name),
                ("NodeGroupName", group),
                ("environment_name", "production"),
                ("puppet_cluster_name", "eu"),
            ])
        };
        let nodes = [node("a01", "base"), node("w01", "web")];
        let migration = map(&tables(), &envs, &groups, &nodes);
        assert_eq!(
            (migration.environments, migration.groups, migration.nodes),
            (1, 1, 1)
        );
        let reasons: Vec<String> = migration.unmapped.iter().map(|u| u.to_string()).collect();
        assert_eq!(
            reasons,
            [
                "Node item UniqueName=w01, NodeGroupName=web: its node group \"web\" is not \
                 mapped (see the NodeGroup items)",
                "NodeGroup item Name=web, Class=motd: Parameters is a number, not a JSON string",
                "NodeGroup item Name=web, Class=nginx: not mapped because another item of group \
                 \"web\" cannot be (Name=web, Class=motd): without one of its classes the group \
                 would classify its nodes differently",
            ]
        );
        assert_eq!(
            migration.files["node_groups/base.yaml"],
            "name: base\ndescription: null\nparent: null\nclasses:\n  ntp: {}\nparameters: {}\n"
        );
        assert!(migration.files.contains_key("nodes/a01.yaml"));
    }
}
