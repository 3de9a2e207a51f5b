//! The DynamoDB engine: the client and its settings here; items, reads, transactions and
//! the table design in their own files. Single reads are strongly consistent, snapshots are
//! `TransactGetItems`, listings read global secondary indexes, and every commit is one
//! `TransactWriteItems` whose conditions are the writes' expectations.

mod items;
mod queries;
pub mod tables;
mod transactions;

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::Client;

use super::record::RecordKind;

const BACKEND: &str = "dynamodb";

/// How to reach DynamoDB.
#[derive(Debug, Clone)]
pub struct DynamoSettings {
    /// e.g. DynamoDB Local's `http://127.0.0.1:8000`; `None` for AWS.
    pub endpoint: Option<String>,
    pub table_prefix: String,
    pub connect_timeout: Duration,
    /// Bounds a whole call, retries included.
    pub operation_timeout: Duration,
    pub max_attempts: u32,
}

impl DynamoSettings {
    /// The settings `config` names.
    pub fn of(config: &crate::config::Config) -> Self {
        Self {
            endpoint: config.dynamodb_endpoint.clone(),
            table_prefix: config.table_prefix.clone(),
            connect_timeout: Duration::from_millis(config.dynamodb_connect_timeout_ms),
            operation_timeout: Duration::from_millis(config.dynamodb_timeout_ms),
            max_attempts: config.dynamodb_max_attempts.max(1),
        }
    }
}

pub struct DynamoDb {
    client: Client,
    prefix: String,
}

impl DynamoDb {
    /// A client from the default AWS configuration (credentials, region) with these settings.
    pub async fn connect(settings: &DynamoSettings) -> Self {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(settings.connect_timeout)
            .operation_timeout(settings.operation_timeout)
            .operation_attempt_timeout(settings.operation_timeout / 2)
            .build();
        let region = RegionProviderChain::default_provider().or_else("us-east-1");
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .timeout_config(timeouts)
            .retry_config(RetryConfig::standard().with_max_attempts(settings.max_attempts))
            .load()
            .await;
        let mut config = aws_sdk_dynamodb::config::Builder::from(&sdk);
        if let Some(endpoint) = &settings.endpoint {
            config = config.endpoint_url(endpoint);
        }
        Self::new(Client::from_conf(config.build()), &settings.table_prefix)
    }

    pub fn new(client: Client, prefix: &str) -> Self {
        Self {
            client,
            prefix: prefix.to_owned(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn table(&self, kind: &RecordKind) -> String {
        format!("{}{}", self.prefix, kind.table)
    }
}
