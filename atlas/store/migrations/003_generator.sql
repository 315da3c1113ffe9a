-- Generator outputs: every summary ever made, and every LLM call behind them. Append-only.

CREATE TABLE summaries (
    pmid               VARCHAR NOT NULL,
    content_hash       VARCHAR,                -- the paper content the summary was made from
    input_hash         VARCHAR NOT NULL,       -- title + abstract + methods + labels + prompt + settings
    generator_version  VARCHAR NOT NULL,
    prompt_hash        VARCHAR,                -- sha256 of the prompt file (extractive: of its version tag)
    checks_version     VARCHAR NOT NULL,
    backend            VARCHAR NOT NULL,       -- extractive | openai-compatible
    model              VARCHAR NOT NULL,
    fields             JSON,                   -- plain_summary, why_it_matters, key_findings, limitations,
                                               -- does_not_prove, open_questions, notice
    checks             JSON,                   -- [{name, passed, detail}]
    status             VARCHAR NOT NULL,       -- ok | flagged | invalid | failed
    reasons            VARCHAR[],
    error              VARCHAR,
    labels             JSON,                   -- scanner labels the summary was written with
    input_tokens       INTEGER,
    output_tokens      INTEGER,
    cost_usd           DOUBLE,
    latency_s          DOUBLE,
    attempts           INTEGER,
    raw_response       VARCHAR,
    created_at         TIMESTAMPTZ NOT NULL,
    run_id             VARCHAR,
    seq                BIGINT DEFAULT nextval('row_seq')
);

-- One row per attempt at an LLM endpoint. Never holds an API key or an Authorization header.
CREATE TABLE llm_calls (
    call_id        VARCHAR NOT NULL,
    run_id         VARCHAR,
    purpose        VARCHAR NOT NULL,           -- summary | extraction | ...
    pmid           VARCHAR,
    model          VARCHAR NOT NULL,
    attempt        INTEGER NOT NULL,
    request        JSON,                       -- messages, schema name, temperature
    response_raw   VARCHAR,
    status         VARCHAR NOT NULL,           -- ok | invalid | error
    http_status    INTEGER,
    error          VARCHAR,
    input_tokens   INTEGER,
    output_tokens  INTEGER,
    cost_usd       DOUBLE,
    latency_s      DOUBLE,
    started_at     TIMESTAMPTZ NOT NULL,
    seq            BIGINT DEFAULT nextval('row_seq')
);

-- Every summary with its revision number and whether it was made from the paper's current content.
CREATE VIEW summary_history AS
SELECT s.*,
       row_number() OVER (PARTITION BY s.pmid ORDER BY s.seq) AS revision,
       coalesce(s.content_hash = cp.content_hash, false) AS for_current_content
FROM summaries s
LEFT JOIN current_papers cp ON cp.pmid = s.pmid;

-- The latest summary of each paper's current content. A failed attempt does not hide an
-- earlier usable row; a paper whose only rows are failures shows its latest failure.
CREATE VIEW current_summaries AS
SELECT s.pmid, s.content_hash, s.input_hash, s.generator_version, s.prompt_hash, s.checks_version,
       s.backend, s.model, s.status, s.reasons, s.error,
       json_extract_string(s.fields, '$.plain_summary')  AS plain_summary,
       json_extract_string(s.fields, '$.why_it_matters') AS why_it_matters,
       json_extract(s.fields, '$.key_findings')          AS key_findings,
       json_extract(s.fields, '$.limitations')           AS limitations,
       json_extract_string(s.fields, '$.does_not_prove') AS does_not_prove,
       json_extract(s.fields, '$.open_questions')        AS open_questions,
       json_extract_string(s.fields, '$.notice')         AS notice,
       s.fields, s.checks, s.labels, s.input_tokens, s.output_tokens, s.cost_usd, s.latency_s,
       s.created_at, s.run_id, s.seq
FROM summaries s
JOIN current_papers cp ON cp.pmid = s.pmid AND cp.content_hash = s.content_hash
QUALIFY row_number() OVER (PARTITION BY s.pmid ORDER BY (s.status = 'failed'), s.seq DESC) = 1;

-- What the evidence pages may show: current summaries that passed every check.
CREATE VIEW published_summaries AS
SELECT * FROM current_summaries WHERE status = 'ok';
