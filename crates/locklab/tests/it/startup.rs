//! webui's read-only startup check refuses bad files in one line and creates
//! nothing (runbuilds and buildinfohelper run the same check in their crates).

#[test]
fn webui_refuses_bad_files() {
    testkit::assert_refuses_bad_files("webui").unwrap();
}
