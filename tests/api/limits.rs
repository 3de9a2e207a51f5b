//! No client can wedge enc: slow headers are cut off, a flood past the limit is answered 503
//! at once (and enc recovers), and a request that takes too long ends in 503.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::binary::{Enc, EncData};
use crate::helpers::ADMIN;

#[test]
fn a_client_sending_headers_a_byte_a_second_is_cut_off() {
    let enc = Enc::start_with(
        &EncData::new(),
        5,
        &[("ENC_HEADER_TIMEOUT_SECONDS", "1")],
        false,
    );
    let mut slow = TcpStream::connect(enc.addr).unwrap();
    let request =
        format!("GET /nodes HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN}\r\n\r\n");
    let started = Instant::now();
    let mut cut_off = false;
    for byte in request.as_bytes() {
        if slow.write_all(&[*byte]).is_err() {
            cut_off = true;
            break;
        }
        slow.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 512];
        match slow.read(&mut buf) {
            Ok(0) => {
                cut_off = true;
                break;
            }
            Ok(_) => {
                // hyper may answer 408 before it closes.
                cut_off = true;
                break;
            }
            Err(_) => {}
        }
        if started.elapsed() > Duration::from_secs(10) {
            break;
        }
        sleep(Duration::from_millis(700));
    }
    assert!(
        cut_off,
        "the slow client was still connected after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Everyone else is served.
    assert_eq!(enc.http("GET", "/nodes", None).0, 200);
}

/// Sends one `GET /healthz` on `stream` and reads its whole answer; the answer's status, or
/// `None` if the connection was closed (or reset) instead.
fn ask(stream: &mut TcpStream) -> Option<u16> {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // The answer is small and has a Content-Length: read until its head and body are in.
    loop {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("a Content-Length");
            if body.len() >= length {
                return head.split(' ').nth(1)?.parse().ok();
            }
        }
    }
}

/// Whether the server closed `stream` (a read gives end of stream or an error at once).
fn closed(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn a_kept_alive_connection_idle_for_61_seconds_still_answers() {
    // The ALB keeps an idle connection to its target for 60 s and may send the next request
    // on it at any moment of them: with the default settings, enc must not have closed it.
    let enc = Enc::start(&EncData::new(), 5);
    let mut stream = TcpStream::connect(enc.addr).unwrap();
    assert_eq!(ask(&mut stream), Some(200));
    sleep(Duration::from_secs(61));
    assert_eq!(
        ask(&mut stream),
        Some(200),
        "the connection was closed while idle for 61 s"
    );
}

#[test]
fn an_idle_connection_is_closed_after_the_keep_alive_and_slow_heads_after_the_header_timeout() {
    let enc = Enc::start_with(
        &EncData::new(),
        5,
        &[
            ("ENC_HEADER_TIMEOUT_SECONDS", "1"),
            ("ENC_KEEP_ALIVE_SECONDS", "3"),
        ],
        false,
    );
    // Idle between requests for longer than the header timeout: still served.
    let mut stream = TcpStream::connect(enc.addr).unwrap();
    assert_eq!(ask(&mut stream), Some(200));
    sleep(Duration::from_secs(2));
    assert_eq!(ask(&mut stream), Some(200), "idle 2 s of a 3 s keep-alive");
    // Idle past the keep-alive: closed by enc.
    let idle = Instant::now();
    assert!(closed(&mut stream), "still open after {:?}", idle.elapsed());
    let waited = idle.elapsed();
    assert!(
        waited >= Duration::from_millis(2500) && waited < Duration::from_secs(5),
        "closed after {waited:?} idle, not the keep-alive's 3 s"
    );
    // The head of a kept-alive connection's second request, sent slowly: cut by the header
    // timeout (1 s), not given the keep-alive's 3 s.
    let mut stream = TcpStream::connect(enc.addr).unwrap();
    assert_eq!(ask(&mut stream), Some(200));
    stream.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    let started = Instant::now();
    assert!(closed(&mut stream), "a slow head was not cut off");
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(2500),
        "a slow head was cut after {waited:?}, not the header timeout's 1 s"
    );
}

/// Starts a request whose body never comes: it holds one place until its connection closes.
fn hold(enc: &Enc) -> TcpStream {
    let mut stream = TcpStream::connect(enc.addr).unwrap();
    let head = format!(
        "POST /environment/ HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream
}

#[test]
fn a_flood_past_the_limit_gets_503_at_once_and_enc_recovers() {
    let enc = Enc::start_with(
        &EncData::new(),
        5,
        &[
            ("ENC_MAX_CONCURRENT_REQUESTS", "4"),
            ("ENC_REQUEST_TIMEOUT_SECONDS", "30"),
        ],
        false,
    );
    let held: Vec<TcpStream> = (0..4).map(|_| hold(&enc)).collect();
    // The held requests take their places once enc has read their heads, which on a busy
    // machine may take a moment. Wait for that on /metrics, which takes no place, so that
    // nothing here competes with them for one: the gauge counts them and this request.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = enc.http("GET", "/metrics", None);
        let in_flight = metrics
            .lines()
            .find_map(|l| l.strip_prefix("http_requests_in_flight "))
            .and_then(|n| n.trim().parse::<i64>().ok());
        if in_flight.is_some_and(|n| n > 4) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the held requests never took the places: {in_flight:?} in flight"
        );
        sleep(Duration::from_millis(20));
    }
    for _ in 0..20 {
        let asked = Instant::now();
        let (status, body) = enc.http("GET", "/nodes", None);
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("too many requests"), "{body}");
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "answered at once, not queued"
        );
    }
    let (ready, _) = enc.http("GET", "/healthz", None);
    assert_eq!(ready, 200, "health checks are answered whatever the load");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while enc.http("GET", "/nodes", None).0 != 200 {
        assert!(Instant::now() < deadline, "enc did not recover");
        sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_request_that_takes_too_long_ends_in_503() {
    let enc = Enc::start_with(
        &EncData::new(),
        5,
        &[("ENC_REQUEST_TIMEOUT_SECONDS", "1")],
        false,
    );
    let mut stalled = hold(&enc);
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = stalled.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// The resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// 100,000 activities written straight into an embedded store, a thousand to a commit.
fn seed_activities(dir: &std::path::Path, count: usize) {
    use enc::store::activities::ACTIVITY;
    use enc::store::engine::{Engine, Expect, Key, Op, Write};
    let engine = enc::store::embedded::Embedded::open(dir).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for batch in 0..count.div_ceil(1000) {
        let writes: Vec<Write> = (0..1000.min(count - batch * 1000))
            .map(|i| {
                let id = format!("{:08}-0000-7000-8000-{:012}", batch, i);
                let body = serde_json::json!({
                    "id": id, "engineer": "alice", "customer": "ACME Corp", "project": "Web",
                    "activity_type": "support", "date": format!("2026-{:02}-{:02}", 1 + i % 12, 1 + i % 28),
                    "hours": 1.5, "description": "a day of work, described at some length to be realistic",
                    "created_at": "2026-11-30T12:00:00.000Z"
                });
                let op = Op::Put { body: body.as_object().unwrap().clone(), refs: 0 };
                Write::new(&ACTIVITY, Key::one(id), op, Expect::Absent)
            })
            .collect();
        runtime.block_on(engine.commit(&writes)).unwrap();
    }
}

#[test]
fn a_csv_of_100000_activities_streams_in_bounded_memory() {
    if crate::helpers::dynamodb_under_test() {
        crate::helpers::skipped(
            "the 100,000-row export runs in the embedded pass; DynamoDB Local writes too slowly to seed it here",
        );
        return;
    }
    const ROWS: usize = 100_000;
    let data = EncData::new();
    let seeding = Instant::now();
    seed_activities(data.dir(), ROWS);
    eprintln!("seeded {ROWS} activities in {:?}", seeding.elapsed());
    let enc = Enc::start(&data, 5);
    let exporting = Instant::now();
    assert_eq!(
        enc.http("GET", "/metrics-form/entries.csv?customer=Nobody", None)
            .0,
        200
    );
    let before = rss_kib(enc.child.id());
    let mut stream = TcpStream::connect(enc.addr).unwrap();
    let request = format!(
        "GET /metrics-form/entries.csv HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let (mut peak, mut total, mut lines) = (before, 0usize, 0usize);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n;
        lines += buf[..n].iter().filter(|b| **b == b'\n').count();
        peak = peak.max(rss_kib(enc.child.id()));
        // A slow reader: the rows wait in the store, not in enc's memory.
        sleep(Duration::from_millis(1));
    }
    eprintln!("exported in {:?}", exporting.elapsed());
    let grew_mib = (peak.saturating_sub(before)) as f64 / 1024.0;
    eprintln!(
        "CSV of {ROWS} rows: {} MiB sent; enc's memory grew {grew_mib:.1} MiB (from {} MiB)",
        total / (1024 * 1024),
        before / 1024
    );
    assert!(lines > ROWS, "every row and the header: {lines} lines");
    assert!(total > 10 * 1024 * 1024, "{total} bytes");
    assert!(
        grew_mib < 16.0,
        "the export held {grew_mib:.1} MiB: it does not stream"
    );
}

#[test]
fn a_resubmitted_form_records_once() {
    let enc = Enc::start(&EncData::new(), 5);
    let (status, page) = enc.http("GET", "/metrics-form", None);
    assert_eq!(status, 200);
    let key = page
        .split("name=\"idempotency_key\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the form carries an idempotency key")
        .to_owned();
    let form = format!(
        "engineer=alice&customer=Twice+Co&project=Web&activity_type=support&hours=1.5&idempotency_key={key}"
    );
    for _ in 0..2 {
        let request = format!(
            "POST /metrics-form HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
            form.len()
        );
        let (status, _) = enc.send_raw(&request);
        assert_eq!(status, 303);
    }
    let json = serde_json::json!({"engineer": "bob", "customer": "Twice Co", "project": "Ops", "activity_type": "meeting", "hours": 2}).to_string();
    let post = |key: &str, body: &str| {
        let request = format!(
            "POST /metrics-form HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer {ADMIN}\r\nIdempotency-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        enc.send_raw(&request)
    };
    let (first, made) = post("retry-after-a-lost-answer", &json);
    let (again, replayed) = post("retry-after-a-lost-answer", &json);
    assert_eq!((first, again), (201, 201));
    let id = |body: &str| serde_json::from_str::<serde_json::Value>(body).unwrap()["id"].clone();
    assert_eq!(id(&made), id(&replayed), "the same entry both times");
    let other = json.replace("\"hours\":2", "\"hours\":3");
    let (reused, problem) = post("retry-after-a-lost-answer", &other);
    assert_eq!(reused, 422, "{problem}");
    assert!(problem.contains("idempotency_key"));
    let (_, listed) = enc.http("GET", "/metrics-form/entries?customer=Twice%20Co", None);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(
        listed["items"].as_array().unwrap().len(),
        2,
        "one from the form, one from JSON: {listed}"
    );
}

#[test]
fn a_tree_file_of_aliases_that_expand_past_its_size_is_refused_at_once_in_flat_memory() {
    // `a` holds 3,000 values, `b` names `a` 3,000 times: 9 million values from 18 KB, which
    // every reader that expands aliases first would allocate (about 1 GB as JSON values).
    const N: usize = 3_000;
    let bomb = format!(
        "name: bomb\na: &a [{}]\nb: [{}]\n",
        vec!["x"; N].join(","),
        vec!["*a"; N].join(",")
    );
    let enc = Enc::start(&EncData::new(), 5);
    let before = rss_kib(enc.child.id());
    let body = serde_json::json!({"files": {"node_groups/bomb.yaml": bomb}}).to_string();
    let started = Instant::now();
    let (status, answer) = enc.http("POST", "/import?dry_run=true", Some(&body));
    let took = started.elapsed();
    assert_eq!(status, 422, "{answer}");
    assert!(answer.contains("YAML aliases"), "{answer}");
    assert!(answer.contains("node_groups/bomb.yaml"), "{answer}");
    let grew = rss_kib(enc.child.id()).saturating_sub(before);
    assert!(grew < 64 * 1024, "enc grew by {grew} KiB reading 18 KB");
    assert!(took < Duration::from_secs(5), "refused after {took:?}");
    // Nothing was stored, and enc goes on.
    let (status, _) = enc.http("GET", "/nodegroup/bomb", None);
    assert_eq!(status, 404);
}
