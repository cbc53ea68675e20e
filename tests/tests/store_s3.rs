//! The S3 artifact store against the test bed's emulator: the same contract as the local store
//! (round trips, sorted listing by prefix, missing keys named, unsafe keys refused), across
//! more than one `ListObjectsV2` page, and the context the deployed functions build from it.
//!
//! Each test creates its own bucket, so tests share the emulator without seeing each other.

use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use pgferry_core::aws::Clients;
use pgferry_core::context::StepContext;
use pgferry_core::error::ErrorKind;
use pgferry_core::seal::SealKey;
use pgferry_core::store::ArtifactStore;
use pgferry_tests::aws;
use serde_json::{Value, json};

/// A new, empty bucket in the emulator, and a store over it.
async fn bucket(c: &Clients) -> (String, ArtifactStore) {
    let name = aws::unique("pgferry-artifacts");
    let mut create = c.s3.create_bucket().bucket(&name);
    // us-east-1 refuses an explicit location constraint; every other region needs one.
    if c.region() != "us-east-1" {
        create = create.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(c.region()))
                .build(),
        );
    }
    create.send().await.expect("create bucket");
    (name.clone(), ArtifactStore::s3(c.s3.clone(), name, Some(SealKey::generate())))
}

#[tokio::test]
async fn json_round_trips_through_a_bucket() {
    let c = aws::clients().await;
    let (_, store) = bucket(&c).await;
    let value = json!({"rows": 42, "table": "public.orders", "bounds": [1, 1000]});
    store.put_json("runs/r1/copy/c1.json", &value).await.unwrap();
    let back: Value = store.get_json("runs/r1/copy/c1.json").await.unwrap();
    assert_eq!(back, value);
    // A second write replaces the object whole.
    store.put_json("runs/r1/copy/c1.json", &json!({"rows": 43})).await.unwrap();
    let back: Value = store.get_json("runs/r1/copy/c1.json").await.unwrap();
    assert_eq!(back, json!({"rows": 43}));
    assert_eq!(store.get_bytes("runs/r1/copy/c1.json").await.unwrap(), serde_json::to_vec_pretty(&back).unwrap());
}

#[tokio::test]
async fn listing_follows_every_page_and_keeps_to_the_prefix() {
    let c = aws::clients().await;
    let (_, store) = bucket(&c).await;
    // 1,100 keys: two pages at S3's default of 1,000 keys a page.
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..1100 {
        let store = store.clone();
        writes.spawn(async move { store.put_bytes(&format!("runs/r1/copy/{i}.json"), b"{}").await });
    }
    while let Some(done) = writes.join_next().await {
        done.unwrap().unwrap();
    }
    store.put_bytes("runs/r1/plan.json", b"[]").await.unwrap();
    store.put_bytes("runs/r10/copy/0.json", b"{}").await.unwrap();

    let keys = store.list("runs/r1/copy/").await.unwrap();
    let mut expected: Vec<String> = (0..1100).map(|i| format!("runs/r1/copy/{i}.json")).collect();
    expected.sort();
    assert_eq!(keys, expected);

    // Small pages give the same answer.
    let ArtifactStore::S3(s3) = &store else { unreachable!() };
    assert_eq!(s3.list("runs/r1/copy/", Some(150)).await.unwrap(), expected);
    assert_eq!(store.list("runs/r1/").await.unwrap().len(), 1101);
    assert!(store.list("runs/none/").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_missing_object_names_its_key() {
    let c = aws::clients().await;
    let (_, store) = bucket(&c).await;
    let err = store.get_bytes("runs/none/plan.json").await.unwrap_err();
    assert!(matches!(err, pgferry_core::Error::Store { .. }), "{err:?}");
    assert!(err.to_string().contains("runs/none/plan.json"), "{err}");
}

#[tokio::test]
async fn keys_that_could_escape_are_refused_as_locally() {
    let c = aws::clients().await;
    let (name, store) = bucket(&c).await;
    for key in ["../x", "/etc/passwd", "a//b", "a/./b", "a/../b", ""] {
        let err = store.put_bytes(key, b"x").await.unwrap_err();
        assert!(matches!(err, pgferry_core::Error::Store { .. }), "{key}: {err:?}");
        assert!(store.get_bytes(key).await.is_err(), "{key}");
    }
    let listed = c.s3.list_objects_v2().bucket(&name).send().await.unwrap();
    assert!(listed.contents().is_empty(), "nothing was written: {:?}", listed.contents());
}

#[tokio::test]
async fn a_context_in_a_bucket_keeps_its_artifacts_in_s3() {
    let c = aws::clients().await;
    let (name, _) = bucket(&c).await;
    // The constructor `StepContext::from_env` uses when PGFERRY_ARTIFACT_BUCKET is set (called
    // directly: the environment is shared by the tests' threads).
    let ctx = StepContext::in_bucket(c.clone(), &name, SealKey::generate());
    assert!(matches!(&ctx.store, ArtifactStore::S3(s) if s.bucket() == name), "{:?}", ctx.store);
    ctx.store.put_json("runs/r1/plan/chunks.json", &json!([{"chunk": "c1"}])).await.unwrap();

    // The object is in the bucket, where the Distributed Map's ItemReader reads it.
    let object = c.s3.get_object().bucket(&name).key("runs/r1/plan/chunks.json").send().await.unwrap();
    let body: Value = serde_json::from_slice(&object.body.collect().await.unwrap().into_bytes()).unwrap();
    assert_eq!(body, json!([{"chunk": "c1"}]));
    // The store and the lookups share the clients given: no second configuration is loaded.
    assert_eq!(ctx.aws.clients().await.unwrap().region(), c.region());
}

/// Issue 23: whoever may write into the bucket cannot hand the functions a rewritten plan, dump
/// or post-data statement — an object not written by a function holding the deployment's key is
/// refused, and so is a sealed object moved under another key.
#[tokio::test]
async fn an_object_rewritten_in_the_bucket_is_refused_as_tampered() {
    let c = aws::clients().await;
    let (name, store) = bucket(&c).await;
    let key = "runs/r1/schema/post-data-items-indexes.json";
    store.put_json(key, &json!([{"sql": "CREATE INDEX i ON t (a)"}])).await.unwrap();
    let _: Value = store.get_json(key).await.unwrap();
    let sealed = c.s3.get_object().bucket(&name).key(key).send().await.unwrap();
    let seal = sealed.metadata().and_then(|m| m.get(pgferry_core::seal::OBJECT_METADATA)).cloned().unwrap();

    let forged = br#"[{"sql": "DROP TABLE t"}]"#.to_vec();
    let put = |key: &'static str, body: Vec<u8>, seal: Option<String>| {
        let mut req = c.s3.put_object().bucket(&name).key(key).body(body.into());
        if let Some(seal) = seal {
            req = req.metadata(pgferry_core::seal::OBJECT_METADATA, seal);
        }
        req.send()
    };
    // Rewritten without a seal, with the old seal, and the genuine object copied to another key.
    put(key, forged.clone(), None).await.unwrap();
    let err = store.get_json::<Value>(key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tampered, "{err}");
    assert!(err.to_string().contains("carries no seal") && err.to_string().contains(key), "{err}");
    assert_eq!(err.kind().step_error_name(), "Pgferry.Tampered");
    put(key, forged, Some(seal.clone())).await.unwrap();
    let err = store.get_json::<Value>(key).await.unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    put(
        "runs/r1/schema/post-data-items-validations.json",
        br#"[{"sql": "CREATE INDEX i ON t (a)"}]"#.to_vec(),
        Some(seal),
    )
    .await
    .unwrap();
    assert_eq!(
        store.get_json_opt::<Value>("runs/r1/schema/post-data-items-validations.json").await.unwrap_err().kind(),
        ErrorKind::Tampered
    );
    // The CLI reads reports for display without the key.
    let display = ArtifactStore::s3(c.s3.clone(), &name, None);
    assert_eq!(display.get_json::<Value>(key).await.unwrap(), json!([{"sql": "DROP TABLE t"}]));
    assert!(display.seal_key().await.is_err(), "a store without the key cannot seal items");
}

#[test]
fn the_template_names_the_bucket_in_the_variable_the_functions_read() {
    let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/template.yaml")).unwrap();
    let line = format!("{}: !Ref ArtifactBucket", pgferry_core::context::ARTIFACT_BUCKET_VAR);
    assert!(template.lines().any(|l| l.trim() == line), "infra/template.yaml does not set `{line}`");
    let line = format!("{}: !Ref SealSecret", pgferry_core::context::SEAL_SECRET_VAR);
    assert!(template.lines().any(|l| l.trim() == line), "infra/template.yaml does not set `{line}`");
}
