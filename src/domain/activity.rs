//! Work engineers record for customer projects, and the sums over it.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::ToSchema;

/// What kind of work an activity was.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ActivityType {
    Consulting,
    Development,
    Deployment,
    Incident,
    Maintenance,
    Meeting,
    Support,
    Other,
}

impl ActivityType {
    pub const ALL: [ActivityType; 8] = [
        ActivityType::Consulting,
        ActivityType::Development,
        ActivityType::Deployment,
        ActivityType::Incident,
        ActivityType::Maintenance,
        ActivityType::Meeting,
        ActivityType::Support,
        ActivityType::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActivityType::Consulting => "consulting",
            ActivityType::Development => "development",
            ActivityType::Deployment => "deployment",
            ActivityType::Incident => "incident",
            ActivityType::Maintenance => "maintenance",
            ActivityType::Meeting => "meeting",
            ActivityType::Support => "support",
            ActivityType::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|t| t.as_str()).collect();
                format!("must be one of {}", names.join(", "))
            })
    }
}

impl fmt::Display for ActivityType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Hours worked, 0.25 to 24 in steps of 0.25, kept as whole quarter hours so sums are exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ToSchema)]
#[schema(value_type = f64, example = 1.5, minimum = 0.25, maximum = 24, multiple_of = 0.25)]
pub struct Hours(u16);

impl Hours {
    pub fn from_f64(hours: f64) -> Result<Self, String> {
        let quarters = hours * 4.0;
        if hours.is_finite() && (1.0..=96.0).contains(&quarters) && quarters.fract() == 0.0 {
            Ok(Hours(quarters as u16))
        } else {
            Err("must be between 0.25 and 24 in steps of 0.25".into())
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        text.parse::<f64>()
            .map_err(|_| "must be a number of hours such as 1.5".to_owned())
            .and_then(Self::from_f64)
    }

    pub fn quarters(self) -> u64 {
        u64::from(self.0)
    }

    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 4.0
    }
}

impl fmt::Display for Hours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_f64())
    }
}

impl Serialize for Hours {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.as_f64())
    }
}

impl<'de> Deserialize<'de> for Hours {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Hours::from_f64(f64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Longest description, in characters.
pub const MAX_DESCRIPTION: usize = 2000;
/// The earliest date work can be recorded for.
pub const EARLIEST: NaiveDate = NaiveDate::from_ymd_opt(2000, 1, 1).unwrap();

/// A work date: from 2000 up to tomorrow (time zones differ), never further ahead.
pub fn parse_work_date(text: &str, today: NaiveDate) -> Result<NaiveDate, String> {
    // Exactly `YYYY-MM-DD` (OpenAPI's `date`): chrono alone would take `2026-1-5`.
    let shaped = text.len() == 10 && text.as_bytes()[4] == b'-' && text.as_bytes()[7] == b'-';
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .filter(|_| shaped)
        .ok_or_else(|| "must be a date such as 2026-11-22".to_owned())?;
    if date < EARLIEST || date > today + chrono::Days::new(1) {
        return Err(format!("must be between {EARLIEST} and tomorrow"));
    }
    Ok(date)
}

/// One recorded piece of work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Activity {
    /// Time-ordered (UUIDv7).
    #[schema(example = "0193a5b2-7c1e-7d4a-9f3e-2b8c6d1e0f42")]
    pub id: String,
    #[schema(value_type = String, example = "alice")]
    pub engineer: super::Label,
    #[schema(value_type = String, example = "ACME Corp")]
    pub customer: super::Label,
    #[schema(value_type = String, example = "Website relaunch")]
    pub project: super::Label,
    pub activity_type: ActivityType,
    #[schema(value_type = String, format = Date, example = "2026-11-20")]
    pub date: NaiveDate,
    pub hours: Hours,
    #[schema(example = "Migrated the staging database")]
    pub description: String,
    #[serde(serialize_with = "super::resources::rfc3339")]
    pub created_at: DateTime<Utc>,
    /// Who recorded it: a token's name or a signed-in person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "alice@example.com")]
    pub recorded_by: Option<String>,
}

impl Activity {
    /// The key that orders activities: by date, then by creation (ids are time-ordered).
    pub fn date_id(&self) -> String {
        format!("{}#{}", self.date, self.id)
    }
}

/// Hours of one group in a summary.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Total {
    /// The customer, `customer / project`, or engineer.
    pub name: String,
    pub hours: f64,
    pub entries: u64,
}

/// Hours summed over a selection of activities.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Summary {
    pub total_hours: f64,
    pub entries: u64,
    pub by_customer: Vec<Total>,
    pub by_project: Vec<Total>,
    pub by_engineer: Vec<Total>,
}

/// Sums hours by customer, project and engineer; largest first, then by name.
pub fn summarize<'a>(activities: impl IntoIterator<Item = &'a Activity>) -> Summary {
    type Sums = BTreeMap<String, (u64, u64)>;
    let mut customers = Sums::new();
    let mut projects = Sums::new();
    let mut engineers = Sums::new();
    let (mut quarters, mut entries) = (0, 0);
    for a in activities {
        let q = a.hours.quarters();
        quarters += q;
        entries += 1;
        for (sums, key) in [
            (&mut customers, a.customer.to_string()),
            (&mut projects, format!("{} / {}", a.customer, a.project)),
            (&mut engineers, a.engineer.to_string()),
        ] {
            let sum = sums.entry(key).or_default();
            sum.0 += q;
            sum.1 += 1;
        }
    }
    let totals = |sums: Sums| {
        let mut list: Vec<Total> = sums
            .into_iter()
            .map(|(name, (q, n))| Total {
                name,
                hours: q as f64 / 4.0,
                entries: n,
            })
            .collect();
        list.sort_by(|a, b| {
            b.hours
                .total_cmp(&a.hours)
                .then_with(|| a.name.cmp(&b.name))
        });
        list
    };
    Summary {
        total_hours: quarters as f64 / 4.0,
        entries,
        by_customer: totals(customers),
        by_project: totals(projects),
        by_engineer: totals(engineers),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Label;

    #[test]
    fn hours_in_quarters() {
        for ok in ["0.25", "1", "1.5", " 7.75 ", "24"] {
            assert!(Hours::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["0", "0.2", "24.25", "-1", "abc", "", "NaN", "inf", "1e9"] {
            assert!(Hours::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Hours::parse("1.75").unwrap().quarters(), 7);
        assert_eq!(
            serde_json::to_string(&Hours::parse("2.5").unwrap()).unwrap(),
            "2.5"
        );
        assert!(serde_json::from_str::<Hours>("0.3").is_err());
    }

    #[test]
    fn work_dates() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
        assert!(parse_work_date("2026-11-23", today).is_ok());
        assert!(parse_work_date("2026-11-24", today).is_err());
        assert!(parse_work_date("1999-12-31", today).is_err());
        assert!(parse_work_date("2026-02-30", today).is_err());
        assert!(parse_work_date("22/11/2026", today).is_err());
        for odd in [
            "",
            " 2026-11-20",
            "2026-11-20 ",
            "2026-1-05",
            "2026-01-5",
            "+2026-1-05",
        ] {
            assert!(parse_work_date(odd, today).is_err(), "{odd:?}");
        }
    }

    #[test]
    fn activity_types() {
        assert_eq!(
            ActivityType::parse("incident").unwrap(),
            ActivityType::Incident
        );
        assert!(
            ActivityType::parse("Incident")
                .unwrap_err()
                .contains("consulting")
        );
    }

    fn activity(
        engineer: &str,
        customer: &str,
        project: &str,
        date: &str,
        hours: &str,
    ) -> Activity {
        Activity {
            recorded_by: None,
            id: uuid::Uuid::now_v7().to_string(),
            engineer: Label::parse(engineer).unwrap(),
            customer: Label::parse(customer).unwrap(),
            project: Label::parse(project).unwrap(),
            activity_type: ActivityType::Development,
            date: date.parse().unwrap(),
            hours: Hours::parse(hours).unwrap(),
            description: String::new(),
            created_at: Utc::now(),
        }
    }

    #[test]
    fn sums_by_customer_project_and_engineer() {
        let entries = [
            activity("alice", "ACME", "Web", "2026-11-01", "1.25"),
            activity("bob", "ACME", "Web", "2026-11-02", "2"),
            activity("alice", "ACME", "Ops", "2026-11-03", "0.25"),
            activity("alice", "Globex", "Web", "2026-11-03", "3.5"),
        ];
        let s = summarize(&entries);
        assert_eq!(s.total_hours, 7.0);
        assert_eq!(s.entries, 4);
        let pairs = |list: &[Total]| {
            list.iter()
                .map(|t| (t.name.clone(), t.hours))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            pairs(&s.by_customer),
            [("ACME".into(), 3.5), ("Globex".into(), 3.5)]
        );
        assert_eq!(
            pairs(&s.by_project),
            [
                ("Globex / Web".into(), 3.5),
                ("ACME / Web".into(), 3.25),
                ("ACME / Ops".into(), 0.25)
            ]
        );
        assert_eq!(
            pairs(&s.by_engineer),
            [("alice".into(), 5.0), ("bob".into(), 2.0)]
        );
        assert_eq!(s.by_engineer[0].entries, 3);
    }
}
