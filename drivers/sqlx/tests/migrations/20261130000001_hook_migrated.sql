-- created by tests/plain_pool.rs (migrations_run_under_the_callers_span)
CREATE TABLE hook_migrated (id int PRIMARY KEY, v text NOT NULL);
