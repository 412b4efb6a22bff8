//! The CRDs committed under `charts/flagger/crds/` are exactly what the code generates, and
//! `flagger crd` prints and writes those same bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

const REGENERATE: &str = "regenerate with `cargo run -- crd --out charts/flagger/crds` and commit";

fn chart_crds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/flagger/crds")
}

#[test]
fn committed_crds_match_the_code() {
    let dir = chart_crds_dir();
    for generated in flagger_actors::crd::crds() {
        let path = dir.join(generated.file_name);
        let expected = flagger_actors::crd::render_crd_yaml(&generated.crd).unwrap();
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} unreadable ({e}); {REGENERATE}", path.display()));
        assert!(
            committed == expected,
            "{} differs from the CRD the code generates; {REGENERATE}",
            path.display()
        );
    }
}

#[test]
fn no_stale_crd_files_are_committed() {
    let expected: Vec<_> = flagger_actors::crd::crds()
        .iter()
        .map(|g| g.file_name.to_owned())
        .collect();
    let mut committed: Vec<_> = std::fs::read_dir(chart_crds_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    committed.sort();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(
        committed, expected_sorted,
        "files in charts/flagger/crds; {REGENERATE}"
    );
}

#[test]
fn flagger_crd_prints_every_committed_crd_as_one_stream() {
    let output = Command::new(env!("CARGO_BIN_EXE_flagger"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut expected = String::new();
    for generated in flagger_actors::crd::crds() {
        expected.push_str("---\n");
        expected.push_str(
            &std::fs::read_to_string(chart_crds_dir().join(generated.file_name)).unwrap(),
        );
    }
    assert!(
        String::from_utf8(output.stdout).unwrap() == expected,
        "`flagger crd` output differs from charts/flagger/crds/*.yaml; {REGENERATE}"
    );
}

#[test]
fn flagger_crd_out_writes_the_committed_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("crds");
    let status = Command::new(env!("CARGO_BIN_EXE_flagger"))
        .args(["crd", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    for generated in flagger_actors::crd::crds() {
        let written = std::fs::read_to_string(out.join(generated.file_name)).unwrap();
        let committed =
            std::fs::read_to_string(chart_crds_dir().join(generated.file_name)).unwrap();
        assert!(
            written == committed,
            "`flagger crd --out` wrote a different {}; {REGENERATE}",
            generated.file_name
        );
    }
}

#[test]
fn committed_crds_parse_back_as_custom_resource_definitions() {
    for generated in flagger_actors::crd::crds() {
        let text = std::fs::read_to_string(chart_crds_dir().join(generated.file_name)).unwrap();
        let parsed: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let expected = serde_json::to_value(&generated.crd).unwrap();
        assert!(
            parsed == expected,
            "{} does not parse back to the generated CRD; {REGENERATE}",
            generated.file_name
        );
    }
}

/// The committed CRD of `file`, parsed the way the testbed's API server reads chart CRDs.
fn committed_crd(file: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(chart_crds_dir().join(file)).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn manifest(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("actors/tests/fixtures")
        .join(name);
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Runs the testbed's prune -> default -> validate on `manifest` with the schema of its version.
fn admit(
    crd: &serde_json::Value,
    manifest: &serde_json::Value,
) -> (serde_json::Value, Vec<String>) {
    let version = manifest["apiVersion"]
        .as_str()
        .unwrap()
        .split('/')
        .nth(1)
        .unwrap();
    let schema = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == version && v["served"] == true)
        .unwrap_or_else(|| panic!("{version} not served"));
    let schema =
        flagger_testbed::schema::Schema::new(&schema["schema"]["openAPIV3Schema"]).unwrap();
    let mut object = manifest.clone();
    let mut problems = schema.prune(&mut object);
    schema.apply_defaults(&mut object);
    problems.extend(schema.validate(&object).iter().map(ToString::to_string));
    (object, problems)
}

#[test]
fn the_testbed_api_server_admits_upstream_manifests_unchanged() {
    for (file, crd_file) in [
        ("podinfo-canary-v1alpha3.yaml", "canary.yaml"),
        ("podinfo-canary-v1beta1.yaml", "canary.yaml"),
        ("podinfo-ab-v1beta1.yaml", "canary.yaml"),
        ("metric-template.yaml", "metrictemplate.yaml"),
        ("alert-provider.yaml", "alertprovider.yaml"),
    ] {
        let original = manifest(file);
        let (stored, problems) = admit(&committed_crd(crd_file), &original);
        assert!(problems.is_empty(), "{file}: {problems:?}");
        assert_eq!(stored, original, "{file} changed on admission");
    }
}

#[test]
fn the_testbed_api_server_rejects_a_canary_without_target_ref() {
    let mut original = manifest("podinfo-canary-v1alpha3.yaml");
    original["spec"]
        .as_object_mut()
        .unwrap()
        .remove("targetRef");
    original["spec"]["canaryAnalysis"]["maxWeight"] = serde_json::json!("lots");
    let (_, problems) = admit(&committed_crd("canary.yaml"), &original);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("spec.targetRef: Required")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("spec.canaryAnalysis.maxWeight")),
        "{problems:?}"
    );
}
