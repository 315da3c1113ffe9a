-- Core ingest tables. Every table is append-only; "current" is a view.
-- Long text columns use zstd: smaller files and faster checkpoints than the default string codecs.

CREATE SEQUENCE IF NOT EXISTS row_seq;

CREATE TABLE runs (
    run_id      VARCHAR PRIMARY KEY,
    flow        VARCHAR NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    parameters  JSON,
    versions    JSON
);

CREATE TABLE run_results (
    run_id      VARCHAR NOT NULL,
    ended_at    TIMESTAMPTZ NOT NULL,
    status      VARCHAR NOT NULL,          -- completed | failed | interrupted
    counts      JSON,
    error       VARCHAR
);

CREATE TABLE watermarks (
    name        VARCHAR NOT NULL,          -- e.g. 'pubmed:edat'
    value       DATE NOT NULL,
    run_id      VARCHAR,
    seq         BIGINT DEFAULT nextval('row_seq'),
    set_at      TIMESTAMPTZ NOT NULL
);

-- Raw XML (or MEDLINE text) as fetched; one row per distinct content.
CREATE TABLE records (
    pmid          VARCHAR NOT NULL,
    content_hash  VARCHAR NOT NULL,
    version       INTEGER,
    source        VARCHAR NOT NULL,        -- efetch | import | file
    raw           BLOB NOT NULL USING COMPRESSION zstd,   -- the record exactly as received (UTF-8)
    fetched_at    TIMESTAMPTZ NOT NULL,
    run_id        VARCHAR,
    seq           BIGINT DEFAULT nextval('row_seq')
);

CREATE TABLE papers (
    pmid               VARCHAR NOT NULL,
    content_hash       VARCHAR NOT NULL,
    version            INTEGER,
    kind               VARCHAR,
    title              VARCHAR,
    title_markup       VARCHAR,
    vernacular_title   VARCHAR,
    abstract           VARCHAR USING COMPRESSION zstd,
    abstract_markup    VARCHAR USING COMPRESSION zstd,                -- NULL: no inline markup, escape `abstract` to display
    authors            STRUCT("last" VARCHAR, fore VARCHAR, initials VARCHAR, collective VARCHAR, orcid VARCHAR)[],
    journal            VARCHAR,
    journal_abbrev     VARCHAR,
    volume             VARCHAR,
    issue              VARCHAR,
    pages              VARCHAR,
    year               INTEGER,
    pub_date           VARCHAR,
    doi                VARCHAR,
    pmcid              VARCHAR,
    publication_types  VARCHAR[],
    mesh_terms         VARCHAR[],
    keywords           VARCHAR[],
    languages          VARCHAR[],
    status             VARCHAR,
    entrez_date        DATE,
    revised_date       DATE,
    errata             VARCHAR[],
    retracted_by       VARCHAR[],
    retraction_of      VARCHAR[],
    is_retracted       BOOLEAN,
    fetched_at         TIMESTAMPTZ NOT NULL,
    run_id             VARCHAR,
    seq                BIGINT DEFAULT nextval('row_seq')
);

CREATE TABLE deletions (
    pmid        VARCHAR NOT NULL,
    version     INTEGER,
    deleted_at  TIMESTAMPTZ NOT NULL,
    run_id      VARCHAR,
    seq         BIGINT DEFAULT nextval('row_seq')
);

-- A paper that failed a stage in a run: a status row, never a crashed run or silence.
CREATE TABLE paper_failures (
    run_id      VARCHAR,
    pmid        VARCHAR,
    stage       VARCHAR NOT NULL,          -- parse | fetch | scan | generate
    error       VARCHAR NOT NULL,
    raw         VARCHAR,
    failed_at   TIMESTAMPTZ NOT NULL
);

CREATE VIEW paper_history AS
SELECT p.*, row_number() OVER (PARTITION BY pmid ORDER BY seq) AS revision
FROM papers p;

-- One row per paper: its latest content, unless a later DeleteCitation withdrew it.
CREATE VIEW current_papers AS
WITH latest AS (
    SELECT * FROM papers QUALIFY row_number() OVER (PARTITION BY pmid ORDER BY seq DESC) = 1
)
SELECT l.* FROM latest l
WHERE NOT EXISTS (SELECT 1 FROM deletions d WHERE d.pmid = l.pmid AND d.seq > l.seq);

CREATE VIEW deleted_papers AS
SELECT d.pmid, d.deleted_at, d.run_id, p.title
FROM deletions d
LEFT JOIN (SELECT * FROM papers QUALIFY row_number() OVER (PARTITION BY pmid ORDER BY seq DESC) = 1) p
       ON p.pmid = d.pmid
WHERE d.seq > coalesce(p.seq, -1);

CREATE VIEW run_summary AS
SELECT r.run_id, r.flow, r.started_at, rr.ended_at,
       coalesce(rr.status, 'running or interrupted') AS status,
       r.parameters, r.versions, rr.counts, rr.error
FROM runs r
LEFT JOIN run_results rr USING (run_id);

CREATE VIEW current_watermarks AS
SELECT name, value, run_id, set_at FROM watermarks
QUALIFY row_number() OVER (PARTITION BY name ORDER BY seq DESC) = 1;
