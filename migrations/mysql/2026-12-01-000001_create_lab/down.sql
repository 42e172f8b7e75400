SET FOREIGN_KEY_CHECKS = 0;
DROP TABLE build_target, br_variable, br_layer, br_target, br_bitbake, build_event, booking,
    build_environment, build, build_request, project;
SET FOREIGN_KEY_CHECKS = 1;
