//! People signed in by the load balancer: `x-amzn-oidc-data` is trusted only as the ALB signs
//! it. The keys are served locally, as the ALB's regional endpoint serves them.

use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use serde_json::{Value, json};

use enc::App;
use enc::auth::Auth;
use enc::auth::alb::{Alb, ScopeRules};

use crate::helpers::{ADMIN, TestApp, TestStore};

const SIGNER: &str =
    "arn:aws:elasticloadbalancing:eu-west-1:000000000000:loadbalancer/app/enc-dev/0123456789abcdef";
const KID: &str = "2b4c7a8e-1f3d-4e5a-9b6c-0d7e8f9a1b2c";

/// A key pair like the load balancer's, and its public key as the endpoint serves it (PEM).
fn key() -> (EcdsaKeyPair, String) {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let der = pair.public_key().as_der().unwrap();
    let body = STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    );
    (pair, pem)
}

/// Serves `pem` at `/<KID>` and nothing else: the regional key endpoint.
async fn key_server(pem: String) -> String {
    let app = axum::Router::new().route(
        "/{kid}",
        axum::routing::get(
            move |axum::extract::Path(kid): axum::extract::Path<String>| {
                let pem = pem.clone();
                async move {
                    if kid == KID {
                        (StatusCode::OK, pem)
                    } else {
                        (StatusCode::NOT_FOUND, String::new())
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Base64url with padding, as the ALB writes every segment.
fn segment(value: &Value) -> String {
    URL_SAFE.encode(value.to_string())
}

fn now() -> i64 {
    enc::domain::now().timestamp()
}

fn header_with(changes: Value) -> Value {
    let mut header = json!({"alg": "ES256", "kid": KID, "signer": SIGNER,
        "iss": "https://idp.example.com", "client": "enc", "exp": now() + 60, "typ": "JWT"});
    for (k, v) in changes.as_object().unwrap() {
        header[k] = v.clone();
    }
    header
}

fn claims() -> Value {
    json!({"sub": "1234", "email": "alice@example.com", "email_verified": true, "groups": ["staff", "enc-admins"], "exp": now() + 60, "iss": "https://idp.example.com"})
}

fn signed(pair: &EcdsaKeyPair, header: &Value, claims: &Value) -> String {
    let message = format!("{}.{}", segment(header), segment(claims));
    let signature = pair.sign(&SystemRandom::new(), message.as_bytes()).unwrap();
    format!("{message}.{}", URL_SAFE.encode(signature.as_ref()))
}

async fn app(keys_url: String) -> TestApp {
    let rules =
        ScopeRules::parse(r#"{"groups=enc-admins": ["read"], "*": ["activities:write"]}"#).unwrap();
    let alb = Alb::new(SIGNER.to_owned(), keys_url, rules);
    let backing = TestStore::new().await;
    let auth = Auth::new(true, Some(ADMIN), Some(alb), false, enc::router::access());
    let state = App::new(backing.engine.clone()).with_auth(auth);
    TestApp::with_state(state, backing).as_caller(None)
}

async fn send(app: &TestApp, uri: &str, data: &str) -> StatusCode {
    let request = Request::get(uri)
        .header("x-amzn-oidc-data", data)
        .body(Body::empty())
        .unwrap();
    app.send(request).await.status
}

#[tokio::test]
async fn only_what_this_load_balancer_signed_is_believed() {
    let (pair, pem) = key();
    let app = Arc::new(app(key_server(pem.clone()).await).await);
    let good = signed(&pair, &header_with(json!({})), &claims());
    assert_eq!(
        send(&app, "/nodes", &good).await,
        StatusCode::OK,
        "groups=enc-admins may read"
    );
    assert_eq!(
        send(&app, "/tokens", &good).await,
        StatusCode::FORBIDDEN,
        "but not administer"
    );

    let (other, _) = key();
    let mut tampered_claims = claims();
    tampered_claims["groups"] = json!(["enc-admins", "more"]);
    let (head, _) = good.rsplit_once('.').unwrap();
    let forged_signature = signed(&other, &header_with(json!({})), &claims());
    let hs256_header = header_with(json!({"alg": "HS256"}));
    let hs256_message = format!("{}.{}", segment(&hs256_header), segment(&claims()));
    let hmac_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, pem.as_bytes());
    let hs256 = format!(
        "{hs256_message}.{}",
        URL_SAFE.encode(aws_lc_rs::hmac::sign(&hmac_key, hs256_message.as_bytes()).as_ref())
    );
    let none_header = header_with(json!({"alg": "none"}));
    let refused = [
        ("a signature by another key", forged_signature),
        (
            "claims changed after signing",
            format!(
                "{}.{}.{}",
                segment(&header_with(json!({}))),
                segment(&tampered_claims),
                good.rsplit('.').next().unwrap()
            ),
        ),
        ("no signature", format!("{head}.")),
        (
            "another load balancer",
            signed(
                &pair,
                &header_with(json!({"signer": SIGNER.replace("enc-dev", "other")})),
                &claims(),
            ),
        ),
        (
            "an expired header",
            signed(&pair, &header_with(json!({"exp": now() - 1})), &claims()),
        ),
        (
            "expired claims",
            signed(
                &pair,
                &header_with(json!({})),
                &json!({"email": "a@example.com", "exp": now() - 1}),
            ),
        ),
        (
            "an unknown key",
            signed(
                &pair,
                &header_with(json!({"kid": "0b4c7a8e-1f3d-4e5a-9b6c-0d7e8f9a1b2c"})),
                &claims(),
            ),
        ),
        (
            "a key id that is a path",
            signed(
                &pair,
                &header_with(json!({"kid": "../../etc/passwd"})),
                &claims(),
            ),
        ),
        (
            "alg none",
            format!("{}.{}.", segment(&none_header), segment(&claims())),
        ),
        ("HS256 keyed with the public key", hs256),
        ("not a JWT", "garbage".to_owned()),
    ];
    let mut texts = std::collections::BTreeSet::new();
    for (what, data) in refused {
        let request = Request::get("/nodes")
            .header("x-amzn-oidc-data", &data)
            .body(Body::empty())
            .unwrap();
        let answer = app.send(request).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{what}");
        texts.insert(answer.json()["detail"].as_str().unwrap().to_owned());
    }
    // One text whatever was wrong: a prober learns nothing from the difference.
    assert_eq!(texts.len(), 1, "{texts:?}");
    // Without the load balancer's sign-in configured, the header means nothing.
    let plain = TestApp::new().await.as_caller(None);
    assert_eq!(
        send(&plain, "/nodes", &good).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_signed_in_person_is_the_engineer() {
    let (pair, pem) = key();
    let app = app(key_server(pem).await).await;
    let data = signed(
        &pair,
        &header_with(json!({})),
        &json!({"sub": "42", "email": "bob@example.com", "email_verified": true, "exp": now() + 60}),
    );
    let request = Request::post("/metrics-form")
        .header("x-amzn-oidc-data", &data)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"engineer": "mallory", "customer": "ACME", "project": "Web", "activity_type": "support", "hours": 1}).to_string(),
        ))
        .unwrap();
    let saved = app.send(request).await.ok(StatusCode::CREATED);
    assert_eq!(saved["engineer"], "bob@example.com", "not the typed name");
    assert_eq!(saved["recorded_by"], "bob@example.com");
    let form = Request::get("/metrics-form")
        .header("x-amzn-oidc-data", &data)
        .body(Body::empty())
        .unwrap();
    let page = TestApp::text(&app.send(form).await);
    assert!(
        page.contains("value=\"bob@example.com\"") && page.contains("readonly"),
        "{page}"
    );
}

/// A key endpoint that counts what it is asked, per key id; it serves its key after `delay`.
async fn counting_key_server(
    pem: String,
    delay: std::time::Duration,
) -> (
    String,
    Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
) {
    let asked: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>> = Arc::default();
    let counted = asked.clone();
    let app = axum::Router::new().route(
        "/{kid}",
        axum::routing::get(
            move |axum::extract::Path(kid): axum::extract::Path<String>| {
                let pem = pem.clone();
                let counted = counted.clone();
                async move {
                    *counted.lock().unwrap().entry(kid.clone()).or_default() += 1;
                    if kid == KID {
                        tokio::time::sleep(delay).await;
                        (StatusCode::OK, pem)
                    } else {
                        (StatusCode::NOT_FOUND, String::new())
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, asked)
}

#[tokio::test]
async fn an_address_counts_only_once_the_identity_provider_verified_it() {
    let (pair, pem) = key();
    let rules = ScopeRules::parse(r#"{"email=ops@example.com": ["read"]}"#).unwrap();
    let alb = Alb::new(SIGNER.to_owned(), key_server(pem).await, rules);
    let backing = TestStore::new().await;
    let auth = Auth::new(true, Some(ADMIN), Some(alb), false, enc::router::access());
    let app = TestApp::with_state(App::new(backing.engine.clone()).with_auth(auth), backing)
        .as_caller(None);
    let with = |verified: Value| {
        let mut claims = json!({"sub": "77", "email": "ops@example.com", "exp": now() + 60});
        if !verified.is_null() {
            claims["email_verified"] = verified;
        }
        signed(&pair, &header_with(json!({})), &claims)
    };
    assert_eq!(
        send(&app, "/nodes", &with(json!(true))).await,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, "/nodes", &with(json!("true"))).await,
        StatusCode::OK
    );
    for unverified in [json!(false), json!("false"), Value::Null] {
        assert_eq!(
            send(&app, "/nodes", &with(unverified.clone())).await,
            StatusCode::FORBIDDEN,
            "email_verified {unverified}: signed in, but the email rule gives nothing"
        );
    }
    // And such a person is named by their subject, not by an address anyone could type.
    let request = Request::post("/metrics-form")
        .header("x-amzn-oidc-data", with(json!(false)))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"customer": "ACME", "project": "Web", "activity_type": "support", "hours": 1})
                .to_string(),
        ))
        .unwrap();
    let answer = app.send(request).await;
    assert_ne!(
        answer.status,
        StatusCode::CREATED,
        "no scope to record work"
    );
}

#[tokio::test]
async fn keys_are_fetched_once_per_key_id_kept_within_bounds_and_an_outage_names_no_address() {
    let (pair, pem) = key();
    let (url, asked) = counting_key_server(pem, std::time::Duration::from_millis(300)).await;
    let app = Arc::new(app(url).await);
    let good = signed(&pair, &header_with(json!({})), &claims());
    // Twenty requests at once with a key not yet fetched: one fetch.
    let requests: Vec<_> = (0..20)
        .map(|_| {
            let (app, good) = (app.clone(), good.clone());
            tokio::spawn(async move { send(&app, "/nodes", &good).await })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        asked.lock().unwrap()[KID],
        1,
        "one fetch for twenty requests"
    );
    // A key the endpoint does not have is not asked for again at once (kept as missing)...
    let unknown = |n: usize| format!("{n:08}-1f3d-4e5a-9b6c-0d7e8f9a1b2c");
    let with_kid = |kid: &str| signed(&pair, &header_with(json!({"kid": kid})), &claims());
    for _ in 0..3 {
        assert_eq!(
            send(&app, "/nodes", &with_kid(&unknown(0))).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(asked.lock().unwrap()[&unknown(0)], 1);
    // ...but made-up key ids do not grow the cache without bound: after a hundred others,
    // the first has been let go, and is asked for again.
    for n in 1..=100 {
        send(&app, "/nodes", &with_kid(&unknown(n))).await;
    }
    send(&app, "/nodes", &with_kid(&unknown(0))).await;
    assert_eq!(
        asked.lock().unwrap()[&unknown(0)],
        2,
        "the cache is bounded"
    );
    // The endpoint down: 503, naming no address.
    let down = Arc::new(app_down().await);
    let answer = down
        .send(
            Request::get("/nodes")
                .header("x-amzn-oidc-data", &good)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let text = TestApp::text(&answer);
    assert!(
        !text.contains("127.0.0.1") && !text.contains("http"),
        "{text}"
    );
    assert!(
        text.contains("signing key could not be fetched"),
        "it says what failed: {text}"
    );
}

/// An app whose key endpoint refuses every connection.
async fn app_down() -> TestApp {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    app(url).await
}
