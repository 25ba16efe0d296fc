-- Skeletons are taken before lowercasing now (TR #39 maps a capital I to
-- l, which lowercasing first hid) and count a run of spaces as one: every
-- name's is computed again at the next start (see backfill.rs). Look-alikes
-- this reveals keep working, as before.
update users set name_skeleton = null;
