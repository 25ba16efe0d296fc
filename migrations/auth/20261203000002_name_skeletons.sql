-- User names are unique by their confusable skeleton (Unicode TR #39) of
-- their NFKC lower case, so that no name can pass for another. The
-- skeleton is computed by the service: names made before this migration
-- get theirs at the service's next start (see src/backfill.rs), the
-- oldest first. Where two existing names already look alike, the newer
-- one keeps working under a skeleton of its own (suffixed with its id)
-- and no new name can look like either.
alter table users add column name_skeleton text;
create unique index users_name_skeleton_key on users (name_skeleton);
