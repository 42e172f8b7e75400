DROP TABLE build_target, br_variable, br_layer, br_target, br_bitbake, build_event, booking,
    build_environment, build, build_request, project CASCADE;
