DROP INDEX build_request_state_id ON build_request;
