//! The DynamoDB table design, in one place. `enc dynamodb tables` prints it as CreateTable
//! input, `enc dynamodb create-tables` creates it, and the CloudFormation data stack must
//! match it. Every key attribute is a string.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TableStatus,
};
use serde_json::{Value, json};

/// A global secondary index; every index projects all attributes.
#[derive(Debug)]
pub struct Index {
    pub name: &'static str,
    pub partition: &'static str,
    pub sort: &'static str,
}

#[derive(Debug)]
pub struct Table {
    /// The table's name after `ENC_TABLE_PREFIX`.
    pub suffix: &'static str,
    pub partition: &'static str,
    pub sort: Option<&'static str>,
    pub indexes: &'static [Index],
}

/// Every item carries `item_type` (constant per table) so the `ordered` index lists a whole
/// table in key order with a Query instead of a Scan.
pub const ITEM_TYPE: &str = "item_type";
/// Environments' `ordered` sort key: `<environment_name>/<puppet_cluster_name>`.
pub const SORT_KEY: &str = "sort_key";
/// How many nodes (and, for groups, child groups) refer to an environment or group; a delete
/// is conditional on it being zero.
pub const REF_COUNT: &str = "ref_count";

pub const ENVIRONMENTS: Table = Table {
    suffix: "environments",
    partition: "environment_name",
    sort: Some("puppet_cluster_name"),
    indexes: &[
        Index {
            name: "ordered",
            partition: ITEM_TYPE,
            sort: SORT_KEY,
        },
        Index {
            name: "by_cluster",
            partition: "puppet_cluster_name",
            sort: SORT_KEY,
        },
    ],
};

pub const NODE_GROUPS: Table = Table {
    suffix: "node_groups",
    partition: "name",
    sort: None,
    indexes: &[
        Index {
            name: "ordered",
            partition: ITEM_TYPE,
            sort: "name",
        },
        Index {
            name: "by_parent",
            partition: "parent",
            sort: "name",
        },
    ],
};

pub const NODES: Table = Table {
    suffix: "nodes",
    partition: "unique_name",
    sort: None,
    indexes: &[
        Index {
            name: "ordered",
            partition: ITEM_TYPE,
            sort: "unique_name",
        },
        Index {
            name: "by_group",
            partition: "node_group_name",
            sort: "unique_name",
        },
        Index {
            name: "by_environment",
            partition: "environment_name",
            sort: "unique_name",
        },
        Index {
            name: "by_cluster",
            partition: "puppet_cluster_name",
            sort: "unique_name",
        },
    ],
};

/// Activities' sort key in every index: `<date>#<id>`, so a date range is a key range and
/// entries of one day keep the order they were recorded in (ids are UUIDv7).
pub const DATE_ID: &str = "date_id";

pub const ACTIVITIES: Table = Table {
    suffix: "activities",
    partition: "id",
    sort: None,
    indexes: &[
        Index {
            name: "ordered",
            partition: ITEM_TYPE,
            sort: DATE_ID,
        },
        Index {
            name: "by_customer",
            partition: "customer",
            sort: DATE_ID,
        },
        Index {
            name: "by_project",
            partition: "project",
            sort: DATE_ID,
        },
        Index {
            name: "by_engineer",
            partition: "engineer",
            sort: DATE_ID,
        },
    ],
};

pub const ALL: [&Table; 4] = [&ENVIRONMENTS, &NODE_GROUPS, &NODES, &ACTIVITIES];

impl Table {
    pub fn name(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.suffix)
    }

    pub fn index_named(&self, name: &str) -> &'static Index {
        self.indexes
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("{} has no index {name}", self.suffix))
    }

    /// The key attributes of the table, then those the index adds: what a cursor holds.
    pub fn key_attributes(&self, index: Option<&Index>) -> Vec<&'static str> {
        let mut keys: Vec<&'static str> = [Some(self.partition), self.sort]
            .into_iter()
            .flatten()
            .collect();
        if let Some(index) = index {
            for k in [index.partition, index.sort] {
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
        keys
    }

    fn attribute_names(&self) -> Vec<&'static str> {
        let mut names = self.key_attributes(None);
        for index in self.indexes {
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
        json!({
            "TableName": self.name(prefix),
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": self.attribute_names().iter()
                .map(|a| json!({"AttributeName": a, "AttributeType": "S"}))
                .collect::<Vec<_>>(),
            "KeySchema": key(self.partition, self.sort),
            "GlobalSecondaryIndexes": self.indexes.iter().map(|i| json!({
                "IndexName": i.name,
                "KeySchema": key(i.partition, Some(i.sort)),
                "Projection": {"ProjectionType": "ALL"},
            })).collect::<Vec<_>>(),
        })
    }
}

/// Every table's CreateTable input.
pub fn definitions(prefix: &str) -> Value {
    Value::Array(ALL.iter().map(|t| t.create_table_input(prefix)).collect())
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
    for table in ALL {
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
        for index in table.indexes {
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
    for table in ALL {
        let name = table.name(prefix);
        for _ in 0..120 {
            let described = client.describe_table().table_name(&name).send().await?;
            let status = described.table().and_then(|t| t.table_status());
            if status == Some(&TableStatus::Active) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_keys_cover_table_and_index() {
        assert_eq!(NODES.key_attributes(None), ["unique_name"]);
        assert_eq!(
            NODES.key_attributes(Some(NODES.index_named("by_group"))),
            ["unique_name", "node_group_name"]
        );
        assert_eq!(
            ENVIRONMENTS.key_attributes(Some(ENVIRONMENTS.index_named("by_cluster"))),
            ["environment_name", "puppet_cluster_name", "sort_key"]
        );
    }

    #[test]
    fn definitions_declare_exactly_the_key_attributes() {
        for table in ALL {
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
            for i in table.indexes {
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
