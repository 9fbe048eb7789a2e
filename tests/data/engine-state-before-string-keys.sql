-- A state database as rulesd wrote it while a group key was a tuple of its parts in memory (before it
-- became one string). Its rules and events are OLD_RULES and OLD_EVENTS in tests/test_state.py.
BEGIN TRANSACTION;
CREATE TABLE engine_groups (
    kind TEXT NOT NULL, rule TEXT NOT NULL, grp TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (kind, rule, grp)
) WITHOUT ROWID;
INSERT INTO "engine_groups" VALUES('absence','quiet','["\"a\""]','{"last":1700000000.0,"event":{"k":"t","host":"a","user":"u1","t":1700000000.0},"origin":null,"open":false,"aliases":[]}');
INSERT INTO "engine_groups" VALUES('absence','quiet','["\"b\""]','{"last":1700000060.0,"event":{"k":"t","host":"b","user":"u2","t":1700000060.0},"origin":null,"open":false,"aliases":[]}');
INSERT INTO "engine_groups" VALUES('absence','quiet','["\"c\""]','{"last":1700000030.0,"event":{"k":"t","host":"c","t":1700000030.0},"origin":null,"open":false,"aliases":[]}');
INSERT INTO "engine_groups" VALUES('absence','quiet','["\"we\\u001fird\""]','{"last":1700000050.0,"event":{"k":"t","host":"we\u001fird","user":{"id":7},"t":1700000050.0},"origin":null,"open":false,"aliases":[]}');
INSERT INTO "engine_groups" VALUES('absence','quiet','["\"z\""]','{"last":1700000000.0,"event":{"host":"z"},"origin":null,"open":false,"aliases":[]}');
INSERT INTO "engine_groups" VALUES('distinct','users','["\"a\""]','{"\"u1\"":1700000000.0}');
INSERT INTO "engine_groups" VALUES('distinct','users','["\"b\""]','{"\"u1\"":1700000010.0,"\"u2\"":1700000060.0}');
INSERT INTO "engine_groups" VALUES('distinct','users','["\"we\\u001fird\""]','{"{\"id\":7}":1700000050.0}');
INSERT INTO "engine_groups" VALUES('new_value','newuser','["\"a\""]','{"\"u1\"":1700000000.0}');
INSERT INTO "engine_groups" VALUES('new_value','newuser','["\"b\""]','{"\"u1\"":1700000010.0,"\"u2\"":1700000060.0}');
INSERT INTO "engine_groups" VALUES('new_value','newuser','["\"we\\u001fird\""]','{"{\"id\":7}":1700000050.0}');
INSERT INTO "engine_groups" VALUES('open','first','["\"a\""]','{"last":1700000000.0,"aliases":["rulesd: first, newuser: {\"host\":\"a\"}"]}');
INSERT INTO "engine_groups" VALUES('open','first','["\"b\""]','{"last":1700000010.0,"aliases":["rulesd: first, newuser: {\"host\":\"b\"}"]}');
INSERT INTO "engine_groups" VALUES('open','first','["\"c\""]','{"last":1700000030.0,"aliases":["rulesd: first: {\"host\":\"c\"}"]}');
INSERT INTO "engine_groups" VALUES('open','first','["\"we\\u001fird\""]','{"last":1700000050.0,"aliases":["rulesd: first, newuser: {\"host\":\"we\\u001fird\"}"]}');
INSERT INTO "engine_groups" VALUES('rule','newuser','[]','{"since":1700000000.0}');
INSERT INTO "engine_groups" VALUES('sequence','twice','["\"a\""]','{"firsts":[1700000000.0],"step":0,"count":0,"start":1700000000.0}');
INSERT INTO "engine_groups" VALUES('sequence','twice','["\"b\""]','{"firsts":[1700000020.0,1700000060.0],"step":1,"count":0,"start":1700000010.0}');
INSERT INTO "engine_groups" VALUES('sequence','twice','["\"c\""]','{"firsts":[1700000030.0],"step":0,"count":0,"start":1700000030.0}');
INSERT INTO "engine_groups" VALUES('sequence','twice','["\"we\\u001fird\""]','{"firsts":[1700000050.0],"step":0,"count":0,"start":1700000050.0}');
INSERT INTO "engine_groups" VALUES('sequence','unfinished','["\"a\""]','{"firsts":[1700000040.0],"step":1,"count":0,"start":1700000040.0,"due":1700001840.0,"event":{"k":"start","host":"a","t":1700000040.0},"origin":null}');
INSERT INTO "engine_groups" VALUES('throttle','first','["\"a\""]','1700000000.0');
INSERT INTO "engine_groups" VALUES('throttle','first','["\"b\""]','1700000010.0');
INSERT INTO "engine_groups" VALUES('throttle','first','["\"c\""]','1700000030.0');
INSERT INTO "engine_groups" VALUES('throttle','first','["\"we\\u001fird\""]','1700000050.0');
INSERT INTO "engine_groups" VALUES('window','all','[]','[1700000000.0,1700000010.0,1700000020.0,1700000030.0,1700000050.0,1700000060.0]');
INSERT INTO "engine_groups" VALUES('window','pair','["\"a\"","\"u1\""]','[1700000000.0]');
INSERT INTO "engine_groups" VALUES('window','pair','["\"b\"","\"u1\""]','[1700000010.0]');
INSERT INTO "engine_groups" VALUES('window','pair','["\"c\"","\u0000missing"]','[1700000030.0]');
INSERT INTO "engine_groups" VALUES('window','pair','["\"we\\u001fird\"","{\"id\":7}"]','[1700000050.0]');
INSERT INTO "engine_groups" VALUES('window','thr','["\"a\""]','[1700000000.0]');
INSERT INTO "engine_groups" VALUES('window','thr','["\"b\""]','[1700000010.0,1700000020.0,1700000060.0]');
INSERT INTO "engine_groups" VALUES('window','thr','["\"c\""]','[1700000030.0]');
INSERT INTO "engine_groups" VALUES('window','thr','["\"we\\u001fird\""]','[1700000050.0]');
CREATE TABLE engine_state (id INTEGER PRIMARY KEY CHECK (id = 1), data TEXT NOT NULL);
INSERT INTO "engine_state" VALUES(1,'{"fingerprints":{"thr":"d3189d2e48af68fb","pair":"d39a2813a001eead","all":"a08d7cd5fba66858","first":"1195178c452e8220","users":"24ad20a5dd071b5b","twice":"664b1be81507898a","unfinished":"e3c35a70d1e252d6","quiet":"90e9dc3ca74ee1e8","newuser":"8097cb4cb1d6ce90"}}');
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO "meta" VALUES('schema_version','1');
INSERT INTO "meta" VALUES('engine_clock','{"clock":1700000060.0,"saved":1700000060.0}');
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_error TEXT,
    response TEXT
, action TEXT NOT NULL DEFAULT 'create', target TEXT);
CREATE TABLE outbox_attempts (
    alert_id INTEGER NOT NULL, at REAL NOT NULL, result TEXT NOT NULL, error TEXT NOT NULL
);
CREATE TABLE positions (source TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE INDEX outbox_pending ON outbox (status, id);
CREATE INDEX outbox_attempts_alert ON outbox_attempts (alert_id, at);
DELETE FROM "sqlite_sequence";
COMMIT;
