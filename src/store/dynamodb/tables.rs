//! The DynamoDB tables, made from the record kinds' descriptions: a table per `table` name
//! (kinds may share one), keyed by its kinds' key fields, with a global secondary index per
//! listing. `enc dynamodb tables` prints them as CreateTable input, `enc dynamodb
//! create-tables` creates them, and the CloudFormation data stack must match them. Every key
//! attribute is a string; every index projects all attributes; billing is on demand.

use std::time::Duration;

use anyhow::Context;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use serde_json::{Value, json};

use crate::store::KINDS;
use crate::store::history::{EXPIRES_AT, REVISION};
use crate::store::record::{Index, RecordKind};

#[derive(Debug)]
pub struct Table {
    /// The table's name after `ENC_TABLE_PREFIX`.
    pub suffix: &'static str,
    pub partition: &'static str,
    pub sort: Option<&'static str>,
    pub indexes: Vec<&'static Index>,
    /// The kinds it holds; the first one's key is the table's.
    pub kinds: Vec<&'static RecordKind>,
}

/// Every table, in the order their kinds are listed.
pub fn tables() -> Vec<Table> {
    let mut tables: Vec<Table> = Vec::new();
    for kind in KINDS {
        let at = match tables.iter().position(|t| t.suffix == kind.table) {
            Some(at) => at,
            None => {
                tables.push(Table {
                    suffix: kind.table,
                    partition: kind.key[0],
                    sort: kind.key.get(1).copied(),
                    indexes: Vec::new(),
                    kinds: Vec::new(),
                });
                tables.len() - 1
            }
        };
        let table = &mut tables[at];
        assert_eq!(
            (table.partition, table.sort),
            (kind.key[0], kind.key.get(1).copied()),
            "kinds sharing {} must share its key",
            kind.table
        );
        table.kinds.push(kind);
        table.indexes.extend(kind.indexes.iter());
    }
    tables
}

impl Table {
    pub fn name(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.suffix)
    }

    fn attribute_names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = [Some(self.partition), self.sort]
            .into_iter()
            .flatten()
            .collect();
        for index in &self.indexes {
            for k in [index.partition, index.sort] {
                if !names.contains(&k) {
                    names.push(k);
                }
            }
        }
        names
    }

    /// The table as DynamoDB's CreateTable input.
    pub fn create_table_input(&self, prefix: &str) -> Value {
        let key = |partition: &str, sort: Option<&str>| {
            let mut schema = vec![json!({"AttributeName": partition, "KeyType": "HASH"})];
            if let Some(sort) = sort {
                schema.push(json!({"AttributeName": sort, "KeyType": "RANGE"}));
            }
            schema
        };
        let mut input = json!({
            "TableName": self.name(prefix),
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": self.attribute_names().iter()
                .map(|a| json!({"AttributeName": a, "AttributeType": "S"}))
                .collect::<Vec<_>>(),
            "KeySchema": key(self.partition, self.sort),
        });
        // DynamoDB refuses an empty list: a table without indexes names none.
        if !self.indexes.is_empty() {
            input["GlobalSecondaryIndexes"] = self
                .indexes
                .iter()
                .map(|i| {
                    json!({
                        "IndexName": i.name,
                        "KeySchema": key(i.partition, Some(i.sort)),
                        "Projection": {"ProjectionType": "ALL"},
                    })
                })
                .collect();
        }
        input
    }
}

/// Every table's CreateTable input.
pub fn definitions(prefix: &str) -> Value {
    Value::Array(
        tables()
            .iter()
            .map(|t| t.create_table_input(prefix))
            .collect(),
    )
}

fn key_schema(
    partition: &str,
    sort: Option<&str>,
) -> Result<Vec<KeySchemaElement>, aws_sdk_dynamodb::error::BuildError> {
    let mut schema = vec![
        KeySchemaElement::builder()
            .attribute_name(partition)
            .key_type(KeyType::Hash)
            .build()?,
    ];
    if let Some(sort) = sort {
        schema.push(
            KeySchemaElement::builder()
                .attribute_name(sort)
                .key_type(KeyType::Range)
                .build()?,
        );
    }
    Ok(schema)
}

/// Creates every table that does not exist yet and waits until all are active.
pub async fn create_tables(client: &Client, prefix: &str) -> anyhow::Result<()> {
    let tables = tables();
    for table in &tables {
        let name = table.name(prefix);
        let mut request = client
            .create_table()
            .table_name(&name)
            .billing_mode(BillingMode::PayPerRequest)
            .set_key_schema(Some(key_schema(table.partition, table.sort)?));
        for attribute in table.attribute_names() {
            request = request.attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(attribute)
                    .attribute_type(ScalarAttributeType::S)
                    .build()?,
            );
        }
        for index in &table.indexes {
            request = request.global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(index.name)
                    .set_key_schema(Some(key_schema(index.partition, Some(index.sort))?))
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::All)
                            .build(),
                    )
                    .build()?,
            );
        }
        match request.send().await {
            Ok(_) => tracing::info!(table = %name, "created table"),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_in_use_exception()) =>
            {
                tracing::info!(table = %name, "table exists");
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("creating {name}"))),
        }
    }
    for table in &tables {
        let name = table.name(prefix);
        for _ in 0..120 {
            let described = client.describe_table().table_name(&name).send().await?;
            let status = described.table().and_then(|t| t.table_status());
            if status == Some(&TableStatus::Active) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if table.kinds.contains(&&REVISION) {
            expire_by_ttl(client, &name).await?;
        }
        drop_unused_indexes(client, &name, table).await?;
    }
    Ok(())
}

/// Indexes earlier encs made that this one retires, by table: the facts' listing by
/// `item_type`, which copied every agent run's facts into one partition. Only these are
/// deleted: an index an operator added is left alone.
const RETIRED_INDEXES: [(&str, &str); 1] = [("facts", "ordered")];

/// Deletes the retired indexes a table still has: the migration of existing tables. An index
/// being deleted already is left to go; DynamoDB deletes one at a time, while the table is
/// `ACTIVE` again.
async fn drop_unused_indexes(client: &Client, name: &str, table: &Table) -> anyhow::Result<()> {
    let retired = |index: &str| {
        RETIRED_INDEXES.contains(&(table.suffix, index))
            && !table.indexes.iter().any(|d| d.name == index)
    };
    for _ in 0..1200 {
        let described = client.describe_table().table_name(name).send().await?;
        let Some(found) = described.table() else {
            return Ok(());
        };
        let unused = found
            .global_secondary_indexes()
            .iter()
            .filter(|i| i.index_name().is_some_and(retired))
            .filter(|i| i.index_status() != Some(&aws_sdk_dynamodb::types::IndexStatus::Deleting))
            .find_map(|i| i.index_name())
            .map(str::to_owned);
        let Some(index) = unused else {
            return Ok(());
        };
        if found.table_status() != Some(&TableStatus::Active) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        let delete = aws_sdk_dynamodb::types::DeleteGlobalSecondaryIndexAction::builder()
            .index_name(&index)
            .build()?;
        let update = aws_sdk_dynamodb::types::GlobalSecondaryIndexUpdate::builder()
            .delete(delete)
            .build();
        client
            .update_table()
            .table_name(name)
            .global_secondary_index_updates(update)
            .send()
            .await
            .with_context(|| format!("deleting index {index} of {name}"))?;
        tracing::info!(table = %name, index = %index, "deleting an index enc no longer uses");
    }
    anyhow::bail!(
        "the indexes of {name} that enc no longer uses were not deleted within 10 minutes"
    )
}

/// Turns on DynamoDB's TTL on revisions' `expires_at` (a table that has it already is left).
async fn expire_by_ttl(client: &Client, name: &str) -> anyhow::Result<()> {
    let described = client
        .describe_time_to_live()
        .table_name(name)
        .send()
        .await?;
    let status = described
        .time_to_live_description()
        .and_then(|d| d.time_to_live_status());
    if matches!(
        status,
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
    ) {
        return Ok(());
    }
    let ttl = TimeToLiveSpecification::builder()
        .attribute_name(EXPIRES_AT)
        .enabled(true)
        .build()?;
    client
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(ttl)
        .send()
        .await?;
    tracing::info!(table = %name, "expiry by TTL on {EXPIRES_AT}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_of_enc() {
        let names: Vec<_> = tables().iter().map(|t| t.suffix).collect();
        assert_eq!(
            names,
            [
                "environments",
                "node_groups",
                "nodes",
                "facts",
                "views",
                "activities",
                "tokens",
                "history"
            ]
        );
        let groups = tables()
            .into_iter()
            .find(|t| t.suffix == "node_groups")
            .unwrap();
        assert_eq!(
            groups.kinds.len(),
            3,
            "groups share their table with the tree's generation and the views' progress"
        );
        let facts = tables().into_iter().find(|t| t.suffix == "facts").unwrap();
        let views = tables().into_iter().find(|t| t.suffix == "views").unwrap();
        assert!(
            facts.indexes.is_empty() && views.indexes.is_empty(),
            "agent runs write facts and views: no index copies them under one partition"
        );
    }

    #[test]
    fn definitions_declare_exactly_the_key_attributes() {
        for table in tables() {
            let input = table.create_table_input("enc-dev-");
            assert!(input["TableName"].as_str().unwrap().starts_with("enc-dev-"));
            let declared: Vec<_> = input["AttributeDefinitions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["AttributeName"].as_str().unwrap().to_owned())
                .collect();
            let mut used: Vec<String> = vec![table.partition.to_owned()];
            used.extend(table.sort.map(str::to_owned));
            for i in &table.indexes {
                used.push(i.partition.to_owned());
                used.push(i.sort.to_owned());
            }
            for name in &used {
                assert!(
                    declared.contains(name),
                    "{name} undeclared in {}",
                    table.suffix
                );
            }
            for name in &declared {
                assert!(
                    used.contains(name),
                    "{name} declared but unused in {}",
                    table.suffix
                );
            }
        }
    }
}
