-- webui's pages (issue 13): `/builds?state=X&after=N` and
-- `/api/build-requests?state=X&after=N` read one state's requests by id, by
-- key. The queue index (state, priority DESC, created_at, id) finds the state
-- but not the id order, so every page sorted all of that state's rows: with
-- 100k requests, one page read them all. (state, id) makes a page a range scan
-- of `limit` entries (EXPLAIN QUERY PLAN: SEARCH build_request USING INDEX
-- build_request_state_id (state=? AND rowid>?), no TEMP B-TREE).
CREATE INDEX build_request_state_id ON build_request (state, id);
