//! The README's configuration table is exactly what the binary documents:
//! no setting can be added or changed without the README following.

mod support;

#[test]
fn readme_settings_table_matches_the_binary() {
    let output = std::process::Command::new(support::bin())
        .arg("--list-settings")
        .output()
        .expect("run --list-settings");
    assert!(output.status.success());
    let table = String::from_utf8(output.stdout).expect("utf-8");
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("<!-- settings:begin -->\n")
        .expect("begin marker")
        + 24;
    let end = readme.find("<!-- settings:end -->").expect("end marker");
    assert_eq!(
        readme[start..end],
        table,
        "README table is stale: regenerate it with `airflow-entrypoint --list-settings`"
    );
}
