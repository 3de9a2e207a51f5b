use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestResponse, raw};

fn valid() -> Vec<(&'static str, &'static str)> {
    vec![
        ("engineer", "alice"),
        ("customer", "ACME Corp"),
        ("project", "Website"),
        ("activity_type", "development"),
        ("date", "2026-11-20"),
        ("hours", "2.5"),
        ("description", "Migrated the staging database"),
    ]
}

fn with<'a>(field: &'a str, value: &'a str) -> Vec<(&'a str, &'a str)> {
    valid()
        .into_iter()
        .map(|(k, v)| (k, if k == field { value } else { v }))
        .collect()
}

async fn entries(app: &TestApp) -> Vec<Value> {
    app.all("/metrics-form/entries").await
}

#[tokio::test]
async fn the_form_is_served_with_every_field_labelled() {
    let app = TestApp::new().await;
    let page = app.get("/metrics-form").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = TestApp::text(&page);
    for field in [
        "engineer",
        "customer",
        "project",
        "activity_type",
        "date",
        "hours",
        "description",
    ] {
        assert!(
            html.contains(&format!("<label for=\"{field}\"")),
            "label for {field}"
        );
        assert!(html.contains(&format!("id=\"{field}\"")), "input {field}");
    }
    for choice in [
        "consulting",
        "development",
        "deployment",
        "incident",
        "maintenance",
        "meeting",
        "support",
        "other",
    ] {
        assert!(
            html.contains(&format!("<option value=\"{choice}\"")),
            "{choice}"
        );
    }
    let today = chrono::Utc::now().date_naive().to_string();
    assert!(
        html.contains(&format!("value=\"{today}\"")),
        "the date defaults to today"
    );
    assert!(html.contains(r#"min="0.25" max="24" step="0.25""#));
    assert!(html.contains(r#"maxlength="2000""#));
}

#[tokio::test]
async fn a_valid_form_post_is_stored_and_confirmed() {
    let app = TestApp::new().await;
    let posted = app.post_form("/metrics-form", &valid()).await;
    assert_eq!(posted.status, StatusCode::SEE_OTHER);
    let location = posted.header("location").unwrap().to_owned();
    assert!(location.starts_with("/metrics-form?saved="), "{location}");

    let stored = entries(&app).await;
    assert_eq!(stored.len(), 1);
    let entry = &stored[0];
    assert_eq!(entry["engineer"], "alice");
    assert_eq!(entry["hours"], 2.5);
    assert_eq!(entry["date"], "2026-11-20");
    assert_eq!(
        location,
        format!("/metrics-form?saved={}", entry["id"].as_str().unwrap())
    );

    let confirmed = TestApp::text(&app.get(&location).await);
    assert!(
        confirmed.contains(
            "Saved: 2.5 h of development for ACME Corp / Website by alice on 2026-11-20."
        ),
        "{confirmed}"
    );
    assert!(
        confirmed.contains(r#"value="alice""#),
        "who worked is kept for the next entry"
    );
    // An unknown or malformed id confirms nothing.
    for uri in [
        "/metrics-form?saved=0193a5b2-7c1e-7d4a-9f3e-2b8c6d1e0f42",
        "/metrics-form?saved=junk",
    ] {
        let page = TestApp::text(&app.get(uri).await);
        assert!(!page.contains("Saved:"), "{uri}");
    }
}

#[tokio::test]
async fn each_invalid_field_is_shown_with_the_values_kept_and_nothing_stored() {
    let app = TestApp::new().await;
    let long_name = "x".repeat(101);
    let long_text = "d".repeat(2001);
    let cases: [(&str, &str, &str); 16] = [
        ("engineer", "", "Engineer is required"),
        ("engineer", &long_name, "Engineer must be 1 to 100"),
        ("customer", "   ", "Customer is required"),
        ("project", "", "Project is required"),
        ("activity_type", "", "Activity type is required"),
        ("activity_type", "gardening", "Activity type must be one of"),
        ("date", "2026-02-30", "Date must be a date"),
        ("date", "", "Date must be a date"),
        ("date", "2026-1-05", "Date must be a date"),
        ("date", "1999-12-31", "Date must be between"),
        ("date", "2999-01-01", "Date must be between"),
        ("hours", "", "Hours is required"),
        ("hours", "0", "Hours must be between 0.25 and 24"),
        ("hours", "1.3", "Hours must be between 0.25 and 24"),
        ("hours", "24.25", "Hours must be between 0.25 and 24"),
        (
            "description",
            &long_text,
            "Description must be at most 2000",
        ),
    ];
    for (field, value, message) in cases {
        let response = app.post_form("/metrics-form", &with(field, value)).await;
        assert_eq!(
            response.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}={value}"
        );
        let html = TestApp::text(&response);
        let error = format!("<p class=\"error\" id=\"{field}-error\">{message}");
        assert!(
            html.contains(&error),
            "{field}={value}: no {error:?} in\n{html}"
        );
        assert!(
            html.contains(&format!("aria-describedby=\"{field}-error\""))
                || html.contains(&format!(" {field}-error\""))
        );
        assert_eq!(
            html.matches("class=\"error\"").count(),
            1,
            "only {field} is wrong"
        );
        // Everything entered comes back.
        assert!(html.contains(r#"value="ACME Corp""#) || field == "customer");
        assert!(
            html.contains(">Migrated the staging database</textarea>") || field == "description"
        );
        if field == "hours" && !value.is_empty() {
            assert!(html.contains(&format!("value=\"{value}\"")));
        }
    }
    assert!(entries(&app).await.is_empty());
}

#[tokio::test]
async fn json_posts_answer_201_or_problems() {
    let app = TestApp::new().await;
    let created = app
        .post(
            "/metrics-form",
            json!({"engineer": "bob", "customer": "Globex", "project": "Ops", "activity_type": "incident", "hours": 1.25}),
        )
        .await
        .ok(StatusCode::CREATED);
    assert_eq!(created["engineer"], "bob");
    assert_eq!(
        created["date"],
        chrono::Utc::now().date_naive().to_string(),
        "date defaults to today"
    );
    assert_eq!(created["description"], "");
    assert!(uuid::Uuid::parse_str(created["id"].as_str().unwrap()).is_ok());

    let fields = app
        .post("/metrics-form", json!({"engineer": "", "customer": "C", "project": "P", "activity_type": "x", "hours": 30, "date": "soon"}))
        .await
        .invalid_fields();
    assert_eq!(fields, ["engineer", "activity_type", "date", "hours"]);
    let fields = app
        .post("/metrics-form", json!({"engineer": "b", "customer": "C", "project": "P", "activity_type": "other", "hours": 1, "minutes": 5}))
        .await
        .invalid_fields();
    assert_eq!(fields, ["minutes"]);
    let text_hours = app
        .post(
            "/metrics-form",
            json!({"engineer": "b", "customer": "C", "project": "P", "activity_type": "other", "hours": "1.75"}),
        )
        .await
        .ok(StatusCode::CREATED);
    assert_eq!(
        text_hours["hours"], 1.75,
        "hours as a JSON string are read too"
    );
    let wrong = app
        .send(raw(
            Method::POST,
            "/metrics-form",
            Some("text/plain"),
            "hours=1",
        ))
        .await;
    wrong.problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let malformed = app
        .send(raw(
            Method::POST,
            "/metrics-form",
            Some("application/json"),
            "{",
        ))
        .await;
    malformed.problem(StatusCode::BAD_REQUEST);
    assert_eq!(
        entries(&app).await.len(),
        2,
        "only the two valid posts were stored"
    );
}

const SCRIPT: &str = "<script>alert('x')</script>";

#[tokio::test]
async fn hostile_input_comes_back_inert() {
    let app = TestApp::new().await;
    // Stored: every free-text field carries a script.
    let hostile = [
        ("engineer", SCRIPT),
        ("customer", SCRIPT),
        ("project", SCRIPT),
        ("activity_type", "support"),
        ("date", "2026-11-20"),
        ("hours", "1"),
        ("description", SCRIPT),
    ];
    let posted = app.post_form("/metrics-form", &hostile).await;
    assert_eq!(posted.status, StatusCode::SEE_OTHER);
    let today = chrono::Utc::now().date_naive();
    for uri in [
        posted.header("location").unwrap().to_owned(),
        format!("/metrics-form/report?from=2026-11-01&to={today}"),
    ] {
        let html = TestApp::text(&app.get(&uri).await);
        assert!(!html.contains("<script>"), "{uri}:\n{html}");
        assert!(
            html.contains("&#60;script&#62;"),
            "{uri} shows the text, escaped"
        );
    }
    // Refused: every field, the fixed-choice ones included, carries a script.
    let all_hostile: Vec<(&str, &str)> = [
        "engineer",
        "customer",
        "project",
        "activity_type",
        "date",
        "hours",
        "description",
    ]
    .into_iter()
    .map(|f| (f, SCRIPT))
    .collect();
    let refused = app.post_form("/metrics-form", &all_hostile).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let html = TestApp::text(&refused);
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.matches("&#60;script&#62;").count() >= 5);
}

async fn record(
    app: &TestApp,
    engineer: &str,
    customer: &str,
    project: &str,
    date: &str,
    hours: f64,
) {
    app.post(
        "/metrics-form",
        json!({"engineer": engineer, "customer": customer, "project": project, "activity_type": "support", "date": date, "hours": hours}),
    )
    .await
    .ok(StatusCode::CREATED);
}

#[tokio::test]
async fn summaries_add_up_over_several_days() {
    let app = TestApp::new().await;
    record(&app, "alice", "ACME", "Web", "2026-11-01", 1.25).await;
    record(&app, "bob", "ACME", "Web", "2026-11-02", 2.0).await;
    record(&app, "alice", "ACME", "Ops", "2026-11-03", 0.25).await;
    record(&app, "alice", "Globex", "Web", "2026-11-03", 3.5).await;
    record(&app, "carol", "Globex", "Web", "2026-11-09", 8.0).await;

    let s = app
        .get("/metrics-form/summary?from=2026-11-01&to=2026-11-03")
        .await
        .ok(StatusCode::OK);
    assert_eq!(s["from"], "2026-11-01");
    assert_eq!(s["to"], "2026-11-03");
    assert_eq!(s["total_hours"], 7.0);
    assert_eq!(s["entries"], 4);
    assert_eq!(
        s["by_customer"],
        json!([{"name": "ACME", "hours": 3.5, "entries": 3}, {"name": "Globex", "hours": 3.5, "entries": 1}])
    );
    assert_eq!(
        s["by_project"],
        json!([
            {"name": "Globex / Web", "hours": 3.5, "entries": 1},
            {"name": "ACME / Web", "hours": 3.25, "entries": 2},
            {"name": "ACME / Ops", "hours": 0.25, "entries": 1}
        ])
    );
    assert_eq!(
        s["by_engineer"],
        json!([{"name": "alice", "hours": 5.0, "entries": 3}, {"name": "bob", "hours": 2.0, "entries": 1}])
    );

    let one = app
        .get("/metrics-form/summary?from=2026-11-01&to=2026-11-30&customer=Globex")
        .await
        .ok(StatusCode::OK);
    assert_eq!(one["total_hours"], 11.5);
    let fields = app
        .get("/metrics-form/summary?from=2026-11-05&to=2026-11-01")
        .await
        .invalid_fields();
    assert_eq!(fields, ["from"]);
    app.get("/metrics-form/summary?form=2026-11-05")
        .await
        .problem(StatusCode::BAD_REQUEST);

    let report = TestApp::text(
        &app.get("/metrics-form/report?from=2026-11-01&to=2026-11-30")
            .await,
    );
    assert!(
        report.contains("<strong>15</strong> hours in <strong>5</strong> entries"),
        "{report}"
    );
    assert!(report.contains("<svg class=\"chart"));
    assert_eq!(report.matches("<rect ").count(), 2, "one bar per customer");
    assert!(
        report.contains("href=\"/metrics-form/entries.csv?from=2026-11-01&#38;to=2026-11-30\"")
            || report
                .contains("href=\"/metrics-form/entries.csv?from=2026-11-01&amp;to=2026-11-30\""),
        "{report}"
    );
}

#[tokio::test]
async fn entries_filter_and_page() {
    let app = TestApp::new().await;
    for day in 1..=9 {
        record(
            &app,
            "alice",
            if day % 3 == 0 { "Globex" } else { "ACME" },
            "Web",
            &format!("2026-11-0{day}"),
            1.0,
        )
        .await;
    }
    let first = app
        .get("/metrics-form/entries?customer=ACME&limit=4")
        .await
        .ok(StatusCode::OK);
    assert_eq!(first["items"].as_array().unwrap().len(), 4);
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest = app
        .get(&format!(
            "/metrics-form/entries?customer=ACME&limit=4&cursor={cursor}"
        ))
        .await
        .ok(StatusCode::OK);
    let dates: Vec<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["items"].as_array().unwrap())
        .map(|e| e["date"].as_str().unwrap())
        .collect();
    assert_eq!(
        dates,
        [
            "2026-11-01",
            "2026-11-02",
            "2026-11-04",
            "2026-11-05",
            "2026-11-07",
            "2026-11-08"
        ]
    );
    assert!(rest["next_cursor"].is_null());
    let ranged = app
        .get("/metrics-form/entries?from=2026-11-03&to=2026-11-06")
        .await
        .ok(StatusCode::OK);
    assert_eq!(ranged["items"].as_array().unwrap().len(), 4);
    app.get(&format!(
        "/metrics-form/entries?customer=Globex&cursor={cursor}"
    ))
    .await
    .problem(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn csv_is_rfc_4180_and_formula_safe() {
    let app = TestApp::new().await;
    app.post(
        "/metrics-form",
        json!({"engineer": "=cmd|' /C calc'!A0", "customer": "+ACME", "project": "-Ops, \"east\"", "activity_type": "support",
               "date": "2026-11-20", "hours": 1.5, "description": "@SUM(1)\nsecond line"}),
    )
    .await
    .ok(StatusCode::CREATED);
    record(&app, "bob", "Globex", "Web", "2026-11-21", 2.0).await;
    let response = app.get("/metrics-form/entries.csv").await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(
        response.header("content-type"),
        Some("text/csv; charset=utf-8")
    );
    assert!(
        response
            .header("content-disposition")
            .unwrap()
            .contains("attachment")
    );
    let csv = TestApp::text(&response);
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert_eq!(
        lines[0],
        "date,engineer,customer,project,activity_type,hours,description,id,created_at"
    );
    assert!(lines[1].starts_with("2026-11-20,'=cmd|' /C calc'!A0,'+ACME,\"'-Ops, \"\"east\"\"\",support,1.5,\"'@SUM(1)\nsecond"), "{csv}");
    assert!(csv.contains("2026-11-21,bob,Globex,Web,support,2,,"));
    assert!(csv.ends_with("\r\n"));
    let only = TestApp::text(&app.get("/metrics-form/entries.csv?customer=Globex").await);
    assert_eq!(only.matches("\r\n").count(), 2, "header and one row");
}

fn preflight(origin: &str) -> Request<Body> {
    Request::builder()
        .method(Method::OPTIONS)
        .uri("/metrics-form")
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
        .body(Body::empty())
        .unwrap()
}

fn allowed(response: &TestResponse) -> Option<&str> {
    response.header("access-control-allow-origin")
}

#[tokio::test]
async fn cors_only_for_configured_origins() {
    let app = TestApp::with_cors(&["https://forms.example.com"]).await;
    let ok = app.send(preflight("https://forms.example.com")).await;
    assert!(ok.status.is_success(), "{}", ok.status);
    assert_eq!(allowed(&ok), Some("https://forms.example.com"));
    assert!(
        ok.header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    let refused = app.send(preflight("https://evil.example.net")).await;
    assert_eq!(allowed(&refused), None);
    let simple = |uri: &str| {
        Request::get(uri)
            .header(header::ORIGIN, "https://forms.example.com")
            .body(Body::empty())
            .unwrap()
    };
    let entries = app.send(simple("/metrics-form/entries")).await;
    assert_eq!(allowed(&entries), Some("https://forms.example.com"));
    // Never the classifier's or the tokens' routes: no other site's page may call them.
    for uri in [
        "/nodes",
        "/nodegroup",
        "/environment",
        "/tokens",
        "/nodes/x/classification",
    ] {
        assert_eq!(allowed(&app.send(simple(uri)).await), None, "{uri}");
    }

    let default = TestApp::new().await;
    assert_eq!(
        allowed(&default.send(preflight("https://forms.example.com")).await),
        None
    );
    assert!(
        enc::App::new(default.backing.engine.clone())
            .with_cors_origins(&["forms.example.com".into()])
            .is_err()
    );
}

#[tokio::test]
async fn no_date_can_break_a_summary_and_ranges_are_bounded() {
    let app = TestApp::new().await;
    for query in [
        "to=-262143-01-01",
        "from=-262143-01-01&to=2026-01-01",
        "to=+262142-12-31",
        "from=2026-02-30",
        "to=10000-01-01",
    ] {
        for route in ["summary", "report", "entries", "entries.csv"] {
            let fields = app
                .get(&format!("/metrics-form/{route}?{query}"))
                .await
                .invalid_fields();
            assert!(!fields.is_empty(), "{route}?{query}");
        }
    }
    for route in ["summary", "report"] {
        let too_long = app
            .get(&format!(
                "/metrics-form/{route}?from=2020-01-01&to=2026-01-01"
            ))
            .await
            .invalid_fields();
        assert_eq!(too_long, ["from"], "{route}");
        let ok = app
            .get(&format!(
                "/metrics-form/{route}?from=0001-01-01&to=0001-12-31"
            ))
            .await;
        assert_eq!(ok.status, StatusCode::OK, "{route}");
    }
    // Listing is paged, so any range may be listed.
    let all = app
        .get("/metrics-form/entries?from=2000-01-01&to=9999-12-31")
        .await;
    assert_eq!(all.status, StatusCode::OK);
}

/// The `<style>` block of an HTML page, hashed as a Content-Security-Policy names it.
fn style_hash(html: &str) -> String {
    use base64::Engine as _;
    use sha2::{Digest, Sha256};
    let start = html.find("<style>").expect("a <style> block") + "<style>".len();
    let end = html.find("</style>").expect("its end");
    let digest = Sha256::digest(&html.as_bytes()[start..end]);
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

#[tokio::test]
async fn html_pages_cannot_be_framed_run_nothing_inline_but_their_style_and_nothing_is_sniffed() {
    let app = TestApp::new().await;
    for path in ["/metrics-form", "/metrics-form/report", "/sign-in"] {
        let page = app.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        let html = TestApp::text(&page);
        let policy = page
            .header("content-security-policy")
            .unwrap_or_else(|| panic!("{path} has no Content-Security-Policy"))
            .to_owned();
        let directives: Vec<&str> = policy.split(';').map(str::trim).collect();
        assert!(directives.contains(&"frame-ancestors 'none'"), "{policy}");
        assert!(directives.contains(&"default-src 'none'"), "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        // The page's one inline style is the one the policy allows by hash: a page whose
        // style changed without its hash would be drawn unstyled.
        assert!(
            directives.contains(&format!("style-src {}", style_hash(&html)).as_str()),
            "{path}: {policy}"
        );
        assert!(!html.contains("<script"), "{path} runs a script");
        assert_eq!(page.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(
            page.header("referrer-policy"),
            Some("no-referrer"),
            "{path}"
        );
        assert_eq!(
            page.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
    }
    // JSON, CSV and problem answers are not sniffed either, and carry no page policy.
    for path in [
        "/metrics-form/entries",
        "/metrics-form/entries.csv",
        "/no/such/route",
    ] {
        let answer = app.get(path).await;
        assert_eq!(
            answer.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(answer.header("content-security-policy"), None, "{path}");
    }
}
