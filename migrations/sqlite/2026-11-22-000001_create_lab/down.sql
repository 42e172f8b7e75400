DROP TABLE build_event;
DROP TABLE build;
DROP TABLE booking;
DROP TABLE build_environment;
DROP TABLE build_request;
DROP TABLE project;
