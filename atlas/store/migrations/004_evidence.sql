-- The policies decisions were made under, and the `evidence` view: one current row per paper with
-- its labels, summary and the versions behind them.

CREATE TABLE policy_documents (
    policy_hash     VARCHAR NOT NULL,      -- sha256 of the policy file's bytes
    policy_version  VARCHAR NOT NULL,
    badges          JSON NOT NULL,         -- {pem value: {label, explainer}}
    criteria_names  JSON NOT NULL,         -- {catalogue id: display name}
    document        JSON NOT NULL,         -- the whole validated policy
    recorded_at     TIMESTAMPTZ NOT NULL,
    seq             BIGINT DEFAULT nextval('row_seq')
);

CREATE VIEW evidence AS
WITH notices AS (
    -- A retraction notice names the paper it retracts; flag that paper even before its own record is revised.
    SELECT retracted AS pmid, list(notice) AS notice_pmids
    FROM (SELECT unnest(retraction_of) AS retracted, pmid AS notice FROM current_papers WHERE len(retraction_of) > 0)
    GROUP BY retracted
),
policy AS (
    SELECT * FROM policy_documents
    QUALIFY row_number() OVER (PARTITION BY policy_hash ORDER BY seq) = 1
)
SELECT
    p.pmid, p.title, p.title_markup, p.authors, p.journal, p.journal_abbrev, p.volume, p.issue, p.pages,
    p.year, p.doi, p.pmcid, p.kind, p.publication_types, p.languages,
    (p.is_retracted OR n.pmid IS NOT NULL) AS is_retracted,
    list_distinct(list_concat(coalesce(p.retracted_by, []), coalesce(n.notice_pmids, []))) AS retracted_by,
    p.errata,
    c.criteria,
    CASE WHEN c.criteria IS NULL THEN NULL
         ELSE list_transform(c.criteria, lambda x: coalesce(json_extract_string(pol.criteria_names, '$."' || x || '"'), x))
    END AS criteria_names,
    c.pem,
    json_extract_string(pol.badges, '$."' || c.pem || '".label')     AS pem_label,
    json_extract_string(pol.badges, '$."' || c.pem || '".explainer') AS pem_explainer,
    c.design, c.evidence_level, c.population, c.evidence,
    s.status AS summary_status, (s.status = 'ok') AS published, s.reasons AS summary_reasons,
    s.backend, s.model, s.notice,
    s.plain_summary, s.why_it_matters,
    CAST(s.key_findings AS VARCHAR[]) AS key_findings, CAST(s.limitations AS VARCHAR[]) AS limitations,
    s.does_not_prove, CAST(s.open_questions AS VARCHAR[]) AS open_questions,
    s.generator_version, c.scanner_version, c.policy_version, c.policy_hash,
    'Generator v' || coalesce(s.generator_version, '-') || ' / Scanner v' || coalesce(c.scanner_version, '-')
        || ' / policy v' || coalesce(c.policy_version, '-') AS versions,
    CAST(p.fetched_at AS DATE) AS accessed,
    p.content_hash, p.run_id AS fetched_by_run
FROM current_papers p
LEFT JOIN current_classifications c ON c.pmid = p.pmid
LEFT JOIN policy AS pol ON pol.policy_hash = c.policy_hash
LEFT JOIN current_summaries s ON s.pmid = p.pmid
LEFT JOIN notices n ON n.pmid = p.pmid;

CREATE VIEW retracted_papers AS
SELECT pmid, title, retracted_by, accessed FROM evidence WHERE is_retracted;
