//! Secure connections, against the brokers of `scripts/secure-up`: Kafka
//! behind a TLS terminator (127.0.0.1:9093) and behind one that requires
//! a client certificate (127.0.0.1:9094). The jobs commit there what they
//! commit over plaintext; a bad certificate is named; a secret shows on
//! no surface; the endpoint off loopback asks for its token.

use super::operations::free_port;
use super::*;
use std::collections::BTreeSet;
use std::process::Stdio;

const TLS_BROKERS: &str = "127.0.0.1:9093";
const MTLS_BROKERS: &str = "127.0.0.1:9094";

fn tls_dir() -> PathBuf {
    root().join(".dev/tls")
}

fn require_tls() {
    require_services();
    for port in [9093, 9094] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            "nothing listens on 127.0.0.1:{port}: run scripts/secure-up"
        );
    }
}

/// A copy of the bank split with topics of its own on `brokers`, reached
/// with the `[job.kafka]` table `kafka`, and the seed's six transactions
/// in its input.
fn bank_on(dir: &Path, tag: &str, brokers: &str, kafka: &str, env: &[(&str, &str)]) -> PathBuf {
    let topics = [
        "bank-transactions",
        "APPROVED",
        "REJECTED",
        "bank-dead-letters",
    ];
    let (job, _) = job_copy(dir, "bank.toml", &topics, tag);
    let text = std::fs::read_to_string(&job)
        .unwrap()
        .replace(
            "brokers = \"127.0.0.1:9092\"",
            &format!("brokers = \"{brokers}\""),
        )
        .replace("\n[sources.", &format!("\n{kafka}\n[sources."));
    std::fs::write(&job, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_jobctl"))
        .args([
            "datagen",
            "bank",
            "--job",
            job.to_str().unwrap(),
            "--seed-records",
        ])
        .envs(env.iter().copied())
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "datagen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    job
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jobctl"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(root())
        .output()
        .unwrap()
}

fn ok_with(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run(args, env);
    assert!(
        out.status.success(),
        "jobctl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn tls_table() -> String {
    format!(
        "[job.kafka]\n\"security.protocol\" = \"ssl\"\n\"ssl.ca.location\" = \"{}\"\n",
        tls_dir().join("ca.pem").display()
    )
}

/// The TLS broker, as the library's Kafka calls take it.
fn tls_brokers() -> kafka_admin::Brokers {
    kafka_admin::Brokers::new(
        TLS_BROKERS,
        std::collections::BTreeMap::from([
            ("security.protocol".to_string(), "ssl".to_string()),
            (
                "ssl.ca.location".to_string(),
                tls_dir().join("ca.pem").display().to_string(),
            ),
        ]),
    )
}

/// A job file's text moved to the TLS broker.
fn on_tls(text: &str) -> String {
    text.replace(
        "brokers = \"127.0.0.1:9092\"",
        &format!("brokers = \"{TLS_BROKERS}\""),
    )
    .replacen("\n[sources.", &format!("\n{}\n[sources.", tls_table()), 1)
}

fn mtls_table() -> String {
    let d = tls_dir();
    format!(
        "[job.kafka]\n\"security.protocol\" = \"ssl\"\n\"ssl.ca.location\" = \"{}\"\n\"ssl.certificate.location\" = \"{}\"\n\"ssl.key.location\" = \"{}\"\n\"ssl.key.password\" = \"${{RILL_TEST_KEY_PASSWORD}}\"\n",
        d.join("ca.pem").display(),
        d.join("client.pem").display(),
        d.join("client.key").display(),
    )
}

fn key_password() -> String {
    std::fs::read_to_string(tls_dir().join("client.key.password"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn the_bank_split_commits_over_tls_and_mutual_tls_what_it_commits_over_plaintext() {
    require_tls();
    let dir = tempfile::tempdir().unwrap();
    let password = key_password();
    let env = [("RILL_TEST_KEY_PASSWORD", password.as_str())];
    let mut committed = Vec::new();
    for (brokers, kafka) in [
        (BROKERS, String::new()),
        (TLS_BROKERS, tls_table()),
        (MTLS_BROKERS, mtls_table()),
    ] {
        let job = bank_on(dir.path(), &unique("tls"), brokers, &kafka, &env);
        let path = job.to_str().unwrap();
        // Run twice: the second reads and writes nothing again.
        for _ in 0..2 {
            let args = [
                "submit",
                path,
                "--until-caught-up",
                "--quiet",
                "--http",
                "off",
            ];
            ok_with(&args, &env);
        }
        committed.push(ok_with(&["verify", path], &env));
    }
    assert_eq!(committed[0].lines().count(), 6, "{}", committed[0]);
    assert_eq!(committed[1], committed[0], "over TLS");
    assert_eq!(committed[2], committed[0], "over mutual TLS");
}

#[test]
fn validate_warns_about_a_password_in_clear_and_names_a_variable_that_is_not_set() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("clear.toml");
    let text = std::fs::read_to_string(root().join("jobs/bank.toml"))
        .unwrap()
        .replace("../schemas/", &format!("{}/schemas/", root().display()))
        .replace(
            "\n[sources.",
            "\n[job.kafka]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\"sasl.username\" = \"${RILL_TEST_USER}\"\n\"sasl.password\" = \"hunter2-in-clear\"\n\n[sources.",
        );
    std::fs::write(&job, &text).unwrap();
    let path = job.to_str().unwrap();
    let out = run(&["validate", path], &[("RILL_TEST_USER", "alice")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "warning: {path}: line 16, column 19: job: `job.kafka.sasl.password` holds a password written in the job file"
        )) && stderr.contains("write `${NAME}` to take it from the environment"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2-in-clear"), "{stderr}");
    let out = jobctl(&["validate", path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("line 15, column 19: job: `job.kafka.sasl.username`: environment variable `RILL_TEST_USER` is not set"),
        "{stderr}"
    );
}

#[test]
fn a_certificate_that_does_not_verify_or_a_missing_client_certificate_is_named() {
    require_tls();
    let d = tls_dir();
    let ca = format!("ssl.ca.location={}", d.join("ca.pem").display());
    let other = format!("ssl.ca.location={}", d.join("other-ca.pem").display());
    let cases: [(&str, &str, &str); 3] = [
        (TLS_BROKERS, &other, "certificate verify failed"),
        (MTLS_BROKERS, &ca, "certificate required"),
        (
            TLS_BROKERS,
            "ssl.ca.location=/no/such/ca.pem",
            "ssl.ca.location",
        ),
    ];
    for (brokers, ca, says) in cases {
        let out = jobctl(&[
            "tail",
            "anything",
            "--brokers",
            brokers,
            "-X",
            "security.protocol=ssl",
            "-X",
            ca,
            "--until-caught-up",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains(says)
                && stderr.contains("check the TLS and SASL properties of [job.kafka]"),
            "{brokers} {ca}: {stderr}"
        );
    }
    let out = jobctl(&[
        "tail",
        "anything",
        "--brokers",
        BROKERS,
        "-X",
        "sasl.pasword=x",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("-X sasl.pasword: No such configuration property: \"sasl.pasword\""));
}

/// Every surface a person or a program reads, gathered while the job
/// runs: the page, the metrics and every route of the API.
fn endpoint_text(agent: &ureq::Agent, base: &str, token: Option<&str>) -> String {
    let mut all = String::new();
    for path in [
        "/",
        "/metrics",
        "/api/v1/job",
        "/api/v1/graph",
        "/api/v1/epochs",
        "/api/v1/errors",
        "/api/v1/state/nothing",
    ] {
        let mut request = agent
            .get(&format!("{base}{path}"))
            .timeout(Duration::from_secs(5));
        if let Some(t) = token {
            request = request.set("Authorization", &format!("Bearer {t}"));
        }
        let body = match request.call() {
            Ok(r) => r.into_string().unwrap(),
            Err(ureq::Error::Status(_, r)) => r.into_string().unwrap(),
            Err(e) => panic!("{path}: {e}"),
        };
        all.push_str(&body);
    }
    all
}

#[test]
fn a_secret_shows_on_no_surface_and_the_endpoint_off_loopback_wants_its_token() {
    require_tls();
    let dir = tempfile::tempdir().unwrap();
    let password = key_password();
    let env = [
        ("RILL_TEST_KEY_PASSWORD", password.as_str()),
        ("RUST_LOG", "debug"),
    ];
    let tag = unique("secret");
    let job = bank_on(dir.path(), &tag, MTLS_BROKERS, &mtls_table(), &env);
    let path = job.to_str().unwrap();
    let token = format!("api-token-{}", unique("t"));
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();

    let mut seen = String::new();
    let validate = run(&["validate", path], &env);
    assert!(validate.status.success());
    seen.push_str(&String::from_utf8_lossy(&validate.stderr));
    let explain = ok_with(&["explain", path], &env);
    assert!(explain.contains("ssl.key.password = ***"), "{explain}");
    seen.push_str(&explain);

    // A process that dies in the middle of a commit, at debug level: all
    // it said before, and the line it leaves.
    let failing = run(
        &["submit", path, "--until-caught-up", "--http", "off"],
        &[
            ("RILL_TEST_KEY_PASSWORD", password.as_str()),
            ("RUST_LOG", "debug"),
            ("RILL_FAIL_AT", "epoch_logged"),
        ],
    );
    let failed = String::from_utf8_lossy(&failing.stderr).to_string();
    assert!(failed.contains("aborting at `epoch_logged`"), "{failed}");
    seen.push_str(&failed);

    // Off loopback without a token or --http-insecure: refused at start.
    let open = run(&["submit", path, "--http", "0.0.0.0:0"], &env);
    assert!(!open.status.success());
    assert!(String::from_utf8_lossy(&open.stderr).contains(
        "would be open to anyone who can reach that address, and its API stops the job: pass --http-token-file FILE"
    ));

    let port = free_port();
    let http = format!("https://127.0.0.1:{port}");
    let agent = tls_agent();
    let mut running = Command::new(env!("CARGO_BIN_EXE_jobctl"))
        .args(["submit", path, "--http", &format!("0.0.0.0:{port}")])
        .arg("--http-token-file")
        .arg(&token_file)
        .arg("--http-tls-cert")
        .arg(tls_dir().join("server.pem"))
        .arg("--http-tls-key")
        .arg(tls_dir().join("server.key"))
        .envs(env.iter().copied())
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let committed = loop {
        let epochs = agent
            .get(&format!("{http}/api/v1/epochs"))
            .set("Authorization", &format!("Bearer {token}"))
            .timeout(Duration::from_secs(5))
            .call()
            .ok()
            .and_then(|r| r.into_string().ok());
        if let Some(e) = epochs.filter(|e| e.contains("\"epoch\"")) {
            break e;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no epoch committed within 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(!committed.is_empty());
    // Without the token, every route answers 401, the stop too.
    for (method, route) in [
        ("GET", "/api/v1/job"),
        ("GET", "/metrics"),
        ("POST", "/api/v1/stop"),
    ] {
        match agent.request(method, &format!("{http}{route}")).call() {
            Err(ureq::Error::Status(401, _)) => {}
            other => panic!("{method} {route} without the token: {other:?}"),
        }
    }
    let wrong = agent
        .get(&format!("{http}/api/v1/job"))
        .set("Authorization", "Bearer not-the-token")
        .call();
    assert!(matches!(wrong, Err(ureq::Error::Status(401, _))));
    // Plain http to the https endpoint gets no answer.
    assert!(ureq::get(&format!("http://127.0.0.1:{port}/api/v1/job"))
        .call()
        .is_err());
    let ca = tls_dir().join("ca.pem");
    let ca = ca.to_str().unwrap();
    let refused = jobctl(&["status", "--http", &http, "--http-ca-file", ca]);
    assert!(String::from_utf8_lossy(&refused.stderr)
        .contains("needs its token: pass --http-token-file"));
    seen.push_str(&endpoint_text(&agent, &http, Some(&token)));
    let token_path = token_file.to_str().unwrap();
    let status = ok(&[
        "status",
        "--http",
        &http,
        "--http-token-file",
        token_path,
        "--http-ca-file",
        ca,
    ]);
    assert!(status.contains(&format!("{tag}-bank")), "{status}");
    seen.push_str(&status);
    ok(&[
        "stop",
        "--http",
        &http,
        "--http-token-file",
        token_path,
        "--http-ca-file",
        ca,
    ]);
    let mut stderr = String::new();
    std::io::Read::read_to_string(running.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(running.wait().unwrap().success(), "{stderr}");
    seen.push_str(&stderr);

    // A key password the key does not open.
    let bad = run(
        &["submit", path, "--http", "off"],
        &[
            ("RILL_TEST_KEY_PASSWORD", "not-the-key-password"),
            ("RUST_LOG", "debug"),
        ],
    );
    let bad_err = String::from_utf8_lossy(&bad.stderr).to_string();
    assert!(!bad.status.success());
    assert!(bad_err.contains("ssl.key.location failed"), "{bad_err}");
    assert!(!bad_err.contains("not-the-key-password"), "{bad_err}");
    seen.push_str(&bad_err);

    assert!(
        seen.len() > 10_000,
        "too little was looked at: {} bytes",
        seen.len()
    );
    for secret in [password.as_str(), token.as_str()] {
        assert!(!seen.contains(secret), "a secret shows:\n{seen}");
    }
}

/// An https client that trusts the test CA.
fn tls_agent() -> ureq::Agent {
    let pem = std::fs::read(tls_dir().join("ca.pem")).unwrap();
    ureq::AgentBuilder::new()
        .tls_connector(std::sync::Arc::new(
            native_tls::TlsConnector::builder()
                .add_root_certificate(native_tls::Certificate::from_pem(&pem).unwrap())
                .build()
                .unwrap(),
        ))
        .build()
}

/// A URL of the Postgres of `scripts/secure-up` (TLS and SCRAM only).
fn tls_postgres_url(password: &str, query: &str) -> String {
    format!("postgresql://rill:{password}@127.0.0.1:5433/postgres?{query}")
}

fn pg_password() -> String {
    std::fs::read_to_string(tls_dir().join("pg.password"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn cashback_lands_once_over_tls_kafka_and_postgres_over_tls_with_scram_and_a_wrong_password_or_ca_is_refused(
) {
    require_tls();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("pgtls");
    let (job, input, table, errors) = cashback_job(dir.path(), &tag);
    let ca = tls_dir().join("ca.pem");
    let verified = format!("sslmode=verify-full&sslrootcert={}", ca.display());
    let text = on_tls(&std::fs::read_to_string(&job).unwrap()).replace(
        "postgresql://postgres@127.0.0.1:5432/postgres",
        &tls_postgres_url("${RILL_TEST_PG_PASSWORD}", &verified),
    );
    std::fs::write(&job, &text).unwrap();
    let path = job.to_str().unwrap();
    let password = pg_password();
    ok_with(
        &[
            "datagen",
            "cashback",
            "--job",
            path,
            "--count",
            "400",
            "--malformed-share",
            "0.1",
            "--quiet",
        ],
        &[("RILL_TEST_PG_PASSWORD", password.as_str())],
    );

    // Refused, each within seconds, in Postgres's or OpenSSL's words.
    let other_ca = tls_dir().join("other-ca.pem");
    for (password, url_query, says) in [
        (
            "not-the-password",
            verified.clone(),
            "password authentication failed for user \"rill\"",
        ),
        (
            password.as_str(),
            format!("sslmode=verify-full&sslrootcert={}", other_ca.display()),
            "certificate verify failed",
        ),
        (
            password.as_str(),
            "sslmode=disable".to_string(),
            "no encryption",
        ),
    ] {
        let refused = job.with_file_name(format!("refused-{tag}.toml"));
        std::fs::write(&refused, text.replace(&verified, &url_query)).unwrap();
        let out = run(
            &[
                "submit",
                refused.to_str().unwrap(),
                "--until-caught-up",
                "--http",
                "off",
            ],
            &[("RILL_TEST_PG_PASSWORD", password)],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains("refused this sink") && stderr.contains(says),
            "{url_query}: {stderr}"
        );
        assert!(!stderr.contains(password), "{stderr}");
    }

    let env = [("RILL_TEST_PG_PASSWORD", password.as_str())];
    for _ in 0..2 {
        ok_with(
            &[
                "submit",
                path,
                "--until-caught-up",
                "--quiet",
                "--http",
                "off",
            ],
            &env,
        );
    }
    let url = tls_postgres_url(&password, &verified);
    let (eligible, malformed) = super::cashback_expected_on(&tls_brokers(), &input);
    let written = super::table_timestamps_at(&url, &table);
    assert!(eligible.len() > 50, "{} eligible", eligible.len());
    assert_eq!(written, eligible);
    let error_rows = rill::connectors::postgres_sink::table_rows(&url, &errors).unwrap();
    assert_eq!(error_rows.len(), malformed);
}

/// `jobctl registry` over https, with basic authentication by `users` or
/// a bearer token of `tokens`.
fn https_registry(port: u16, topic: &str, users: &Path, tokens: &Path) -> std::process::Child {
    let d = tls_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobctl"))
        .args([
            "registry",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--brokers",
            BROKERS,
        ])
        .args(["--topic", topic])
        .arg("--tls-cert")
        .arg(d.join("server.pem"))
        .arg("--tls-key")
        .arg(d.join("server.key"))
        .arg("--users-file")
        .arg(users)
        .arg("--tokens-file")
        .arg(tokens)
        .current_dir(root())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the registry did not listen"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the registry exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

#[test]
fn over_tls_kafka_a_job_and_confluents_client_read_the_same_schemas_from_an_https_registry_with_basic_auth(
) {
    require_tls();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("sr");
    let users = dir.path().join("users");
    let secret = format!("sr-secret-{tag}");
    std::fs::write(&users, format!("# name:password\nsr-key:{secret}\n")).unwrap();
    let tokens = dir.path().join("tokens");
    let token = format!("sr-token-{tag}");
    std::fs::write(&tokens, format!("{token}\n")).unwrap();
    let port = free_port();
    let mut registry = https_registry(port, &format!("_schemas-{tag}"), &users, &tokens);
    let url = format!("https://127.0.0.1:{port}");

    // Without credentials, or with wrong ones: 401, as Confluent's answers.
    let agent = tls_agent();
    match agent.get(&format!("{url}/subjects")).call() {
        Err(ureq::Error::Status(401, r)) => {
            assert_eq!(
                r.into_string().unwrap(),
                r#"{"error_code":40101,"message":"Unauthorized"}"#
            )
        }
        other => panic!("{other:?}"),
    }

    let registry_settings = format!(
        "registry_url = \"{url}\"\nregistry_username = \"sr-key\"\nregistry_password = \"${{RILL_TEST_SR_SECRET}}\"\nregistry_ca_file = \"{}\"\n",
        tls_dir().join("ca.pem").display()
    );
    let topics = [
        "bank-transactions",
        "APPROVED",
        "REJECTED",
        "bank-dead-letters",
    ];
    let (job, names) = job_copy(dir.path(), "bank.toml", &topics, &tag);
    let text = on_tls(&std::fs::read_to_string(&job).unwrap()).replace(
        "registry_url = \"http://127.0.0.1:8081\"\n",
        &registry_settings,
    );
    std::fs::write(&job, &text).unwrap();
    let path = job.to_str().unwrap();

    // A wrong secret stops the start, naming what to set.
    let wrong = run(
        &["submit", path, "--until-caught-up", "--http", "off"],
        &[("RILL_TEST_SR_SECRET", "not-the-secret")],
    );
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success());
    assert!(
        said.contains(&format!(
            "schema registry at {url} refused this client: 401"
        )) && said.contains("set registry_username and registry_password"),
        "{said}"
    );

    let env = [("RILL_TEST_SR_SECRET", secret.as_str())];
    ok_with(&["datagen", "bank", "--job", path, "--seed-records"], &env);
    ok_with(
        &[
            "submit",
            path,
            "--until-caught-up",
            "--quiet",
            "--http",
            "off",
        ],
        &env,
    );
    let committed = ok_with(&["verify", path], &env);
    assert_eq!(committed.lines().count(), 6, "{committed}");
    assert_eq!(
        committed
            .lines()
            .filter(|l| l.starts_with("approved "))
            .count(),
        5
    );
    // The same job with a bearer token instead decodes the same records.
    let with_token = job.with_file_name(format!("token-{tag}.toml"));
    std::fs::write(
        &with_token,
        text.replace(
            "registry_username = \"sr-key\"\nregistry_password = \"${RILL_TEST_SR_SECRET}\"\n",
            "registry_token = \"${RILL_TEST_SR_TOKEN}\"\n",
        ),
    )
    .unwrap();
    let by_token = ok_with(
        &["verify", with_token.to_str().unwrap()],
        &[("RILL_TEST_SR_TOKEN", token.as_str())],
    );
    assert_eq!(by_token, committed);

    // Confluent's Python client, with its own basic auth setting, finds
    // the schemas the job registered, under the ids the job's records
    // carry.
    let script = format!(
        r#"
from confluent_kafka.schema_registry import SchemaRegistryClient
c = SchemaRegistryClient({{"url": "{url}", "basic.auth.user.info": "sr-key:{secret}", "ssl.ca.location": "{ca}"}})
for s in sorted(c.get_subjects()):
    v = c.get_latest_version(s)
    print(s, v.schema_id, v.schema.schema_type)
"#,
        ca = tls_dir().join("ca.pem").display()
    );
    let py = Command::new(root().join(".tansu-venv/bin/python"))
        .args(["-c", &script])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&py.stdout).to_string();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let ids_in_records = |topic: &str| -> BTreeSet<u32> {
        read_topic_on(&tls_brokers(), topic)
            .iter()
            .map(|r| avro::split_wire(&r.value).unwrap().0)
            .collect()
    };
    for (topic, subject) in [
        (
            &names["bank-transactions"],
            format!("{}-value", names["bank-transactions"]),
        ),
        (&names["APPROVED"], format!("{}-value", names["APPROVED"])),
    ] {
        let line = listed
            .lines()
            .find(|l| l.starts_with(&format!("{subject} ")))
            .unwrap_or_else(|| panic!("{subject} not in {listed}"));
        let id: u32 = line.split(' ').nth(1).unwrap().parse().unwrap();
        assert_eq!(ids_in_records(topic), BTreeSet::from([id]), "{line}");
        assert!(line.ends_with(" AVRO"), "{line}");
    }
    let _ = registry.kill();
    let _ = registry.wait();
}

#[test]
fn turnstile_windows_over_tls_count_every_event_once_in_the_topic_and_the_lake() {
    require_tls();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("tlsturn");
    let (job, t) = turnstile_copy(dir.path(), &tag);
    std::fs::write(&job, on_tls(&std::fs::read_to_string(&job).unwrap())).unwrap();
    let path = job.to_str().unwrap();
    ok(&[
        "datagen",
        "turnstile",
        "--job",
        path,
        "--count",
        "1200",
        "--stations",
        "3",
        "--quiet",
    ]);
    for workers in ["2", "1"] {
        ok(&[
            "submit",
            path,
            "--until-caught-up",
            "--quiet",
            "--http",
            "off",
            "--workers",
            workers,
        ]);
    }
    let topic: Vec<serde_json::Value> =
        read_topic_on(&tls_brokers(), &t["turnstile-station-counts"])
            .iter()
            .map(|r| serde_json::from_slice(&r.value).unwrap())
            .collect();
    let mut windows = BTreeSet::new();
    for w in &topic {
        let id = (
            w["station"].to_string(),
            w["window_start"].as_i64().unwrap(),
        );
        assert!(windows.insert(id.clone()), "window {id:?} sent twice");
    }
    let reports: i64 = topic.iter().map(|w| w["reports"].as_i64().unwrap()).sum();
    let dead = read_topic_on(&tls_brokers(), &t["turnstile-dead-letters"]).len() as i64;
    assert_eq!(reports + dead, 1200, "every event in one window or dead");
    // The lake holds the topic's windows, row for row.
    let mut lake_reports = 0i64;
    for file in lake_files(&dir.path().join("out/turnstile")) {
        for line in gunzip(&file).lines().skip(1) {
            lake_reports += line.rsplit(',').next().unwrap().parse::<i64>().unwrap();
        }
    }
    assert_eq!(lake_reports, reports);
}
