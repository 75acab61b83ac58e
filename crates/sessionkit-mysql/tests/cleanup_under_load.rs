//! Cleanup of many expired rows from three app servers at once, while a write load runs.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cleanup_from_three_servers_under_write_load() {
    let table = sessionkit_testkit::scratch_table();
    let Some(servers) =
        sessionkit_testkit::mysql_servers(&sessionkit_testkit::mysql_url(), &table, "", 3).await
    else {
        return;
    };
    sessionkit_conformance::cleanup::cleanup_while_writing(servers).await;
}
