-- Scanner: facts (policy-free extractions) and decisions (classifications under a policy).
-- Append-only; "current" is a view. A policy change appends classifications, never rewrites.

-- Methods sections of open-access full texts (PMC JATS), read by extraction.
CREATE TABLE fulltexts (
    pmid          VARCHAR NOT NULL,
    pmcid         VARCHAR NOT NULL,
    methods       VARCHAR,                 -- NULL: the article has no recognisable methods section
    content_hash  VARCHAR NOT NULL,        -- sha256 of the JATS bytes
    fetched_at    TIMESTAMPTZ NOT NULL,
    run_id        VARCHAR,
    seq           BIGINT DEFAULT nextval('row_seq')
);

-- One row per (pmid, content_hash, scanner_version, extractor, text read).
CREATE TABLE extractions (
    extraction_id    VARCHAR NOT NULL,     -- sha256 of the key below, truncated
    pmid             VARCHAR NOT NULL,
    content_hash     VARCHAR NOT NULL,     -- the paper version read
    scanner_version  VARCHAR NOT NULL,
    extractor        VARCHAR NOT NULL,     -- rules | llm:<model>
    text_hash        VARCHAR NOT NULL,     -- sha256 of title, abstract and methods as read
    sources          VARCHAR[],            -- which texts were read: title, abstract, methods
    facts            JSON NOT NULL,        -- scanner.facts.Facts: every fact with quote and offsets
    created_at       TIMESTAMPTZ NOT NULL,
    run_id           VARCHAR,
    seq              BIGINT DEFAULT nextval('row_seq')
);

CREATE TABLE classifications (
    pmid             VARCHAR NOT NULL,
    extraction_id    VARCHAR NOT NULL,
    scanner_version  VARCHAR NOT NULL,
    policy_version   VARCHAR NOT NULL,
    policy_hash      VARCHAR NOT NULL,     -- sha256 of the policy file's bytes
    criteria         VARCHAR[] NOT NULL,   -- catalogue ids, or ['not_stated']
    pem              VARCHAR NOT NULL,     -- required | not_required | unclear | not_applicable
    design           VARCHAR NOT NULL,
    evidence_level   VARCHAR NOT NULL,
    population       VARCHAR[],
    evidence         STRUCT(label VARCHAR, quote VARCHAR, source VARCHAR)[],
    decided_at       TIMESTAMPTZ NOT NULL,
    run_id           VARCHAR,
    seq              BIGINT DEFAULT nextval('row_seq')
);

CREATE VIEW current_fulltexts AS
SELECT * FROM fulltexts
QUALIFY row_number() OVER (PARTITION BY pmid ORDER BY seq DESC) = 1;

-- The latest extraction of each paper's current content.
CREATE VIEW current_extractions AS
SELECT e.* FROM extractions e
JOIN current_papers p ON p.pmid = e.pmid AND p.content_hash = e.content_hash
QUALIFY row_number() OVER (PARTITION BY e.pmid ORDER BY e.seq DESC) = 1;

-- The latest decision on each paper's current extraction, under the most recently applied policy.
CREATE VIEW current_classifications AS
WITH latest_policy AS (
    SELECT policy_hash FROM classifications ORDER BY seq DESC LIMIT 1
)
SELECT c.* FROM classifications c
JOIN current_extractions e ON e.extraction_id = c.extraction_id
WHERE c.policy_hash = (SELECT policy_hash FROM latest_policy)
QUALIFY row_number() OVER (PARTITION BY c.pmid ORDER BY c.seq DESC) = 1;

-- Every decision ever made, with what it was made from, in order per paper.
CREATE VIEW classification_history AS
SELECT c.pmid, c.seq, c.decided_at, c.run_id, c.extraction_id, e.content_hash, c.scanner_version,
       e.extractor, c.policy_version, c.policy_hash, c.criteria, c.pem, c.design, c.evidence_level,
       c.population, c.evidence,
       row_number() OVER (PARTITION BY c.pmid ORDER BY c.seq) AS revision
FROM classifications c
LEFT JOIN (SELECT DISTINCT ON (extraction_id) extraction_id, content_hash, extractor FROM extractions) e
       USING (extraction_id);
