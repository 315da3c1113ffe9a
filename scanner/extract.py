"""Rule-based fact extraction: deterministic, offline, policy-free.

Reads a paper's title, abstract and (when available) methods, and records which
case definitions are named, in what role (inclusion, comparison, subgroup,
background), how they combine, explicit PEM requirements, PEM measured only,
study design and population. Each fact keeps its verbatim quote and offsets.

How it stays fast (thousands of papers a second on one core): every pattern is
compiled once into a few ``Patterns`` alternations; each source is split into
sentences once; the role rules run only on sentences that name a definition or
PEM, which most abstracts never do. ``SCANNER_VERSION`` versions these rules:
stored extractions are keyed by it.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

from scanner.facts import (
    Classification,
    Combination,
    DesignCue,
    Facts,
    Mention,
    PaperText,
    PemStatement,
    PopulationCue,
)

SCANNER_VERSION = "1.1.0"
MAX_QUOTE = 600

# --- case definition names --------------------------------------------------------------------
# (key, pattern). Keys are catalogue ids or the ambiguous families "cdc"/"nice". Order matters
# where two patterns can start at the same place: the more specific one comes first.
_CRIT = r"(?:criteria|criterion|case\s+definitions?|definitions?|diagnostic\s+criteria|research\s+criteria)"
_CRITW = rf"(?:\s+(?i:{_CRIT}))?"
_ETAL = r"(?:\s+et\s+al\.?)?"
_CDC = r"(?:CDC|(?i:Centers?\s+for\s+Disease\s+Control)(?:\s+and\s+Prevention)?(?:\s*\(CDC\))?)"
_NICE = r"(?:\bNICE\b|(?i:National\s+Institute\s+for\s+(?:Health\s+and\s+)?(?:Clinical|Care)\s+Excellence)(?:\s*\(NICE\))?)"

DEFINITION_PATTERNS: list[tuple[str, str]] = [
    # explicit years first
    ("fukuda_1994", rf"1994\s+(?:US\s+)?{_CDC}{_CRITW}"),
    ("fukuda_1994", rf"\b{_CDC}(?:'s)?[\s-]*\(?1994\)?{_CRITW}"),
    ("holmes_1988", rf"1988\s+(?:US\s+)?{_CDC}{_CRITW}"),
    ("holmes_1988", rf"\b{_CDC}(?:'s)?[\s-]*\(?1988\)?{_CRITW}"),
    ("nice_2021", rf"2021\s+{_NICE}{_CRITW}"),
    ("nice_2021", rf"{_NICE}[\s,-]*\(?(?:2021|NG\s?206)\)?(?:\s+(?i:guidelines?|guidance))?{_CRITW}"),
    ("nice_2021", rf"{_NICE}\s+(?i:guidelines?|guidance)[\s,-]*\(?(?:2021|NG\s?206)\)?{_CRITW}"),
    ("nice_2021", r"\bNG\s?206\b"),
    ("nice_2007", rf"2007\s+{_NICE}{_CRITW}"),
    ("nice_2007", rf"{_NICE}[\s,-]*\(?(?:2007|CG\s?53)\)?(?:\s+(?i:guidelines?|guidance))?{_CRITW}"),
    ("nice_2007", rf"{_NICE}\s+(?i:guidelines?|guidance)[\s,-]*\(?(?:2007|CG\s?53)\)?{_CRITW}"),
    ("nice_2007", r"\bCG\s?53\b"),
    ("icc_2011", rf"\bCarruthers{_ETAL},?\s*\(?2011\)?"),
    ("ccc_2003", rf"\bCarruthers{_ETAL},?\s*\(?2003\)?"),
    ("iom_2015", r"(?:\bIOM\b|(?i:Institute\s+of\s+Medicine))[\s-]*\(?2015\)?" + _CRITW),
    # names
    ("fukuda_1994", rf"\bFukuda{_ETAL}(?:,?\s*\(?1994\)?)?(?:'s)?{_CRITW}"),
    ("fukuda_1994", r"(?i:International\s+(?:Chronic\s+Fatigue\s+Syndrome|CFS)\s+Study\s+Group)"),
    ("holmes_1988", rf"\bHolmes{_ETAL}(?:,?\s*\(?1988\)?)(?:'s)?{_CRITW}"),
    ("holmes_1988", rf"\bHolmes(?:'s)?\s+(?i:{_CRIT})"),
    ("oxford_1991", rf"\bOxford(?:\s*\(?1991\)?)?[\s-]+(?i:{_CRIT})"),
    ("oxford_1991", rf"\bSharpe{_ETAL},?\s*\(?1991\)?"),
    ("london", rf"\bLondon(?:\s+ME)?\s+(?i:{_CRIT})"),
    ("london", rf"\bDowsett{_ETAL},?\s*\(?199[0-4]\)?"),
    ("ramsay", rf"\bRamsay(?:'s)?(?:\s+\(?19\d\d\)?)?\s+(?i:{_CRIT}|description)"),
    ("icc_2011", rf"\bInternational\s+Consensus\s+Criteri(?:a|on)(?:\s+(?i:for\s+(?:ME|myalgic\s+encephalomyelitis)))?"),
    ("icc_2011", r"(?i:international\s+consensus\s+criteri(?:a|on))(?=\s*\(ICC\)|\s+for\s+(?i:ME|myalgic))"),
    ("icc_2011", r"\bME[\s-]ICC\b"),
    ("icc_2011", r"\bICC\b" + _CRITW),
    ("ccc_2003", r"(?i:(?:revised\s+)?Canadian\s+(?:Consensus\s+)?(?:Clinical\s+)?(?:ME/?CFS\s+|ME\s+|CFS\s+)?"
                 r"(?:Case\s+)?(?:Criteria|Definition|Document|Consensus))"),
    ("ccc_2003", r"\bCCC\b(?:[\s-]*\(?2003\)?)?" + _CRITW),
    ("ccc_2003", rf"\bCarruthers(?:'s)?\s+(?i:{_CRIT})"),
    ("iom_2015", rf"(?i:Institute\s+of\s+Medicine)(?:\s*\(IOM\))?{_CRITW}"),
    ("iom_2015", r"\bIOM\b(?:\s*/\s*NAM\b)?" + _CRITW),
    ("iom_2015", r"(?i:National\s+Academ(?:y|ies)\s+of\s+(?:Medicine|Sciences))(?:\s*\(NAM\))?" + _CRITW),
    ("iom_2015", rf"\bNAM\s+(?i:{_CRIT})"),
    ("iom_2015", r"(?i:Systemic\s+Exertion\s+Intolerance\s+Disease)(?:\s*\(SEID\))?" + _CRITW),
    ("iom_2015", r"\bSEID\b" + _CRITW),
    ("reeves_2005", r"(?i:(?:CDC\s+)?empiric(?:al)?\s+(?:CDC\s+)?(?:case\s+)?(?:definition|criteria))"),
    ("reeves_2005", r"(?i:CDC\s+empiric(?:al)?)" + _CRITW),
    ("reeves_2005", rf"\bReeves{_ETAL},?\s*\(?2005\)?{_CRITW}"),
    ("reeves_2005", rf"\bReeves(?:'s)?\s+(?i:{_CRIT})"),
    ("pediatric_2006", r"(?i:(?:IACFS/ME\s+)?p(?:a)?ediatric\s+(?:ME/?CFS\s+|CFS\s+|ME\s+|case\s+)?"
                       r"(?:case\s+definition|criteria|diagnostic\s+criteria|definition))"),
    ("pediatric_2006", rf"\bJason{_ETAL},?\s*\(?2006\)?"),
    ("other", r"(?i:Australian\s+(?:case\s+definition|criteria|definition))"),
    ("other", rf"\bLloyd{_ETAL},?\s*\(?1988\)?"),
    ("other", rf"\bLloyd(?:'s)?\s+(?i:{_CRIT})"),
    ("other", r"\bICD[-\s]?10(?:[-\s]CM)?[^.;]{0,20}?\bG93\.3\b|\bG93\.32?\b"),
    ("other", r"\bICD[-\s]?11[^.;]{0,20}?\b8E49\b|\b8E49\b"),
    ("other", r"(?i:Japanese\s+(?:case\s+definition|criteria|diagnostic\s+criteria))"),
    # families resolved by the policy (bare names)
    ("nice", rf"{_NICE}(?:\s+(?i:guidelines?|guidance|clinical\s+guidelines?))?{_CRITW}"),
    ("cdc", rf"\b{_CDC}(?:'s)?{_CRITW}"),
]

# The regex for one sentence-level cue list is built once per Patterns instance.
_I = re.IGNORECASE

NEGATION_BEFORE = re.compile(
    r"\b(?:not|n't|never|failed\s+to|fail(?:s|ing)?\s+to|no\s+longer|neither|nor|without|non)\b(?:[\s-]+[\w/-]+){0,4}?[\s-]*(?:the\s+)?$"
    r"|n't(?:\s+\w+){0,3}\s*$", _I)
NO_ONE_MET_BEFORE = re.compile(
    r"\b(?:no|none)(?:\s+of)?(?:\s+(?:the|our|these|those))?(?:\s+\w+)?\s+(?:met|meet|meets|fulfill?ed|fulfil(?:led|s)?|"
    r"satisfied|satisfies)\s+(?:the\s+|any\s+of\s+the\s+)?$", _I)
NEGATION_AFTER = re.compile(
    r"^[\s,)\]]*(?:\(\w+\)\s*)?(?:criteria\s+|case\s+definition\s+|definition\s+)?(?:was|were|is|are)\s+(?:not|never)\s+"
    r"(?:used|applied|met|fulfill?ed|satisfied|required)\b", _I)
EXCLUSION = re.compile(r"\bexclu(?:ded|sion|de)\b", _I)
# a definition whose holders were excluded: "patients meeting the Oxford criteria were excluded"
EXCLUDED_AFTER = re.compile(r"^([^;.]{0,80}?)\b(?:were|was|are|is|been|be)\s+excluded\b", _I)
EXCLUDED_BEFORE = re.compile(
    r"\b(?:exclusion\s+criteri\w*|excluded\s+(?:if|when|because)|excluding|to\s+exclude)\b[^;.]{0,60}$", _I)
INCLUDED_WORD = re.compile(r"\b(?:included|recruited|enrolled|selected|eligible)\b", _I)
SEPARATELY_AFTER = re.compile(
    r"^[^;.]{0,60}?\b(?:(?:analy[sz]ed|examined|considered|reported|assessed|studied)\s+separately|separately\s+"
    r"(?:analy[sz]ed|examined|considered|reported|assessed|studied))\b", _I)
ALTERNATIVE_CONNECTOR = re.compile(r"\b(?:rather\s+than|instead\s+of)\b", _I)
# other people's studies: "patients meeting the ICC had more severe symptoms in several studies"
LITERATURE_SENTENCE = re.compile(
    r"\b(?:in\s+(?:several|many|some|most|previous|prior|earlier|other|these|those|recent)\s+(?:studies|trials|reports|cohorts)|"
    r"previous(?:ly)?\s+(?:studies|research|work|reports)|(?:studies|research|trials)\s+(?:have|has)\s+(?:shown|reported|found|"
    r"suggested|used)|(?:have|has)\s+been\s+(?:shown|reported|found|described)\s+in|in\s+the\s+literature)\b", _I)
OWN_STUDY = re.compile(r"\b(?:we|our|this\s+study|the\s+present\s+study|here)\b", _I)
COMPARE_CONNECTOR = re.compile(
    r"\b(?:versus|vs\.?|compared\s+(?:with|to)|against|relative\s+to|in\s+contrast\s+to|rather\s+than|instead\s+of|"
    r"than)\b", _I)
COMPARE_CUE = re.compile(
    r"\b(?:compar\w*|contrast\w*|agreement|concordance|overlap\w*|discrepanc\w*|sensitivity|"
    r"specificity|applying\s+(?:the\s+)?(?:different|several|multiple|various|\w+\s+different)|"
    r"(?:different|several|multiple|various|competing|four|three|two|five|six)\s+(?:ME/CFS\s+|CFS\s+)?"
    r"(?:case\s+definitions|sets\s+of\s+criteria|diagnostic\s+criteria|criteria\s+sets|definitions))\b", _I)
PARTICIPANT_PHRASE = re.compile(
    r"\b(?:patients|participants|individuals|subjects|people|persons|cases|those|women|men|adults|children|"
    r"adolescents|volunteers|controls)\b", _I)
SUBGROUP_CUE = re.compile(
    r"\b(?:sub-?groups?|sub-?sets?|sub-?samples?|sub-?cohorts?|of\s+whom|of\s+these|of\s+them|of\s+those|"
    r"among\s+(?:them|these|those|whom)|post[\s-]?hoc|further\s+(?:classified|categori[sz]ed|stratified|divided|"
    r"subdivided|split|grouped)|sub-?classified|stratified\s+(?:by|according\s+to|using|into)|"
    r"(?:also|additionally)\s+(?:met|meet|meeting|fulfill?(?:ed|ing|s)?|satisf(?:ied|ying|y))|"
    r"proportion|percentage|prevalence|restrict\w*\s+(?:the\s+|these\s+|our\s+|this\s+)?analys\w*|"
    r"sensitivity\s+analys\w*|secondary\s+analys\w*\s+(?:of|in|among)\s+(?:those|patients|participants)|"
    r"\d+(?:\.\d+)?\s?%\)?\s+(?:of\s+(?:the\s+)?\w+\s+)?(?:also\s+)?(?:met|fulfill?ed|satisfied)|"
    r"\d+\s*\(\s*\d+(?:\.\d+)?\s?%\s*\)\s+(?:also\s+)?(?:met|fulfill?ed|satisfied)|"
    r"(?:some|most|many|several|half|majority|minority|a\s+third|two-thirds)\s+(?:of\s+(?:them|these|the\s+\w+)\s+)?"
    r"(?:also\s+)?(?:met|fulfill?ed|satisfied))\b", _I)
PARTITION_BEFORE = re.compile(
    r"\b\d+\s+(?:\w+\s+)?(?:meeting|met|fulfill?ing|fulfilled|satisfying|satisfied|according\s+to|by|with)\s+"
    r"(?:the\s+)?$", _I)
GROUP_LABEL_AFTER = re.compile(
    r"[\s,)\]]*(?:criteria\s+|case\s+definition\s+)?(?:classes|class|groups?|subgroups?|sub-groups?|subsets?|"
    r"phenotypes?|categories)\b", _I)
PREVALENCE_AFTER = re.compile(
    r"[\s,)\]]*(?:\(\w+\)\s*)?(?:criteria\s+|definition\s+)?(?:designated|identified|classified|diagnosed|"
    r"captured|selected)\s+(?:\w+\s+){0,3}in\s+(?:only\s+)?\d", _I)
OTHER_DISEASE = re.compile(
    r"\b(?:MS|multiple\s+sclerosis|fibromyalgia|FM|depression|depressive|cancer|lupus|arthritis|IBS|POTS|diabetes|"
    r"long\s+COVID|post-COVID|PCS|PASC|stroke|epilepsy|migraine|asthma|COPD)\b")
ME_CFS_TERM = re.compile(r"\b(?:ME/CFS|CFS/ME|CFS|ME|myalgic|chronic\s+fatigue|SEID)\b", _I)
ALL_QUANTIFIER = re.compile(r"\b(?:all|every|each)\b", _I)
INCLUSION_CUE = re.compile(
    r"\b(?:diagnos\w*|met|meet|meets|meeting|fulfill?(?:ed|ing|s)?|fulfil(?:led|ling|s)?|satisf(?:y|ied|ies|ying)|"
    r"according\s+to|based\s+on|defined|using|used|per|by|with|inclusion|included|includ\w+|enrol\w*|recruit\w*|"
    r"eligib\w*|select\w*|screen\w*|confirm\w*|identif\w*|classif\w*|under|applying|applied|following|"
    r"in\s+accordance\s+with|consistent\s+with|conform\w*|criteria\s+for)\b", _I)
STUDY_ANCHOR = re.compile(
    r"\b(?:we|our|were|was|had|will|n\s*=|this\s+study|the\s+present\s+study|recruited|enrolled|included|eligible|"
    r"eligibility|inclusion|met|fulfill?ed|fulfilled|satisfied|meeting|fulfill?ing|satisfying|who\s+(?:meet|fulfill?|"
    r"satisfy)|must|patients|participants|subjects|individuals|cases|adults|children|adolescents|women|men|"
    r"volunteers|respondents|cohort|sample)\b", _I)
GENERIC_DEFINITIONAL = re.compile(
    r"\b(?:is|are)\s+(?:commonly|usually|often|typically|currently|generally|frequently|most\s+often|now|still)?\s*"
    r"(?:diagnosed|defined|characteri[sz]ed|identified|recogni[sz]ed|based)\b|\b(?:can|may|should|could)\s+be\s+"
    r"(?:diagnosed|defined)\b", _I)
BACKGROUND_BEFORE = re.compile(
    r"(?:\bsuch\s+as|\be\.g\.,?|\bfor\s+example,?|\bunlike|\bin\s+contrast\s+to|\bthan|\breplaced|\bincluding|"
    r"\bnamely|\blike)\s+(?:the\s+)?(?:\w+\s+)?$|\b(?:symptoms?|features?|items?|domains?|components?|elements?|"
    r"requirements?)\s+(?:in|of|from|listed\s+in|defined\s+(?:in|by))\s+(?:the\s+)?(?:\w+\s+){0,2}$", _I)
BACKGROUND_AFTER = re.compile(
    r"^[\s,)\]]*(?:\(\w+\)\s*)?(?:criteria\s+|definition\s+)?(?:\w+\s+)?(?:require|requires|required\s+that|"
    r"mandate|mandates|emphasi[sz]e|emphasi[sz]es|define|defines|include|includes|describe|describes|consider|"
    r"considers|(?:was|were|is|are|has\s+been|have\s+been)\s+(?:developed|published|proposed|introduced|created|"
    r"revised|designed|criticized|criticised|widely|the\s+most|more|less|broader|stricter|narrower|considered))\b", _I)
MODIFIED_BEFORE = re.compile(
    r"\b(?:modified|adapted|adaptation\s+of|operationali[sz]ed|abbreviated|simplified|partial(?:ly)?|loosely|"
    r"modification\s+of)\s+(?:version\s+of\s+)?(?:the\s+)?$", _I)
MODIFIED_SENTENCE = re.compile(
    r"\b(?:some\s+of\s+the\s+symptoms|without\s+(?:requiring|the\s+requirement\s+(?:of|for))|"
    r"(?:criteria|definition)\s+(?:were|was)\s+(?:modified|adapted|loosely\s+applied))\b", _I)
BOTH = re.compile(r"\bboth\b", _I)
EITHER = re.compile(r"\b(?:either|at\s+least\s+one\s+of|any\s+of|one\s+or\s+more\s+of|or\s+both)\b", _I)

# Connector text between two definition names: what remains after dropping filler decides.
_FILLER = re.compile(
    r"\([^()]*\)|\[[^\]]*\]|\bet\s+al\.?|\b(?:19|20)\d\d\b|\b(?:the|criteria|criterion|case|definitions?|"
    r"diagnostic|research|for|of|me|cfs|me/cfs|chronic\s+fatigue\s+syndrome|myalgic\s+encephalomyelitis|"
    r"revised|clinical|consensus|'s|s|respectively)\b|[,;:()\[\]]", _I)
_CONNECTOR_OK = re.compile(
    r"^\s*(?:and\s*/\s*or|or|and|/|as\s+well\s+as|plus|together\s+with|along\s+with|in\s+addition\s+to|"
    r"in\s+addition|and\s+in\s+addition|and\s+also|and\s+the|or\s+the|and\s+by|or\s+by|and\s+with|or\s+with|"
    r"and\s+both|and\s+either)?\s*$", _I)
_ANY_CONNECTOR = re.compile(r"\bor\b|/", _I)
_ALL_CONNECTOR = re.compile(r"\band\b|\bas\s+well\s+as\b|\bplus\b|\bin\s+addition\b|\btogether\s+with\b|"
                            r"\balong\s+with\b", _I)

# --- PEM --------------------------------------------------------------------------------------
PEM_TERM = re.compile(
    r"(?i:post[\s-]?exertion(?:al)?\s+(?:malaise|symptom\s+exacerbation|fatigue|exhaustion|"
    r"neuroimmune\s+exhaustion|symptoms?|worsening|relapse))|\bPEM\b|\bPESE\b|\bPENE\b|"
    r"(?i:exertion(?:al)?\s+intolerance)")
PEM_MEASURE_ONLY = re.compile(
    r"(?i:DePaul\s+Symptom\s+Questionnaire|\bDSQ(?:-PEM|-2|-SF)?\b|\b(?:two|2)[\s-]day\s+(?:CPET|"
    r"cardiopulmonary|exercise)|\brepeated\s+(?:CPET|cardiopulmonary)|\bCPET\b|cardiopulmonary\s+exercise\s+test)")
PEM_MEASURE = re.compile(
    r"\b(?:assess\w*|measur\w*|evaluat\w*|quantif\w*|record\w*|rated|rating|report\w*|captur\w*|monitor\w*|"
    r"induc\w*|provok\w*|provocation|examin\w*|characteri[sz]\w*|severity|questionnaire|scale|score\w*|"
    r"frequency|duration|investigat\w*|track\w*|collected)\b", _I)
PEM_REQUIRED = re.compile(
    r"\b(?:required|requiring|requirement|mandatory|compulsory|obligatory|had\s+to|must|needed\s+to|"
    r"prerequisite|inclusion\s+criteri\w+|eligib\w+|to\s+be\s+included|to\s+qualify|included\s+(?:only\s+)?if|"
    r"only\s+if|only\s+(?:patients|participants|those|individuals|people)\s+(?:with|who|reporting))\b", _I)
# Requirement words that only set a context ("eligible participants completed ..."), unlike "required" or "must"
PEM_WEAK_REQUIRED = re.compile(r"^(?:inclusion\s+criteri\w+|eligib\w+|to\s+be\s+included)$", _I)
# A clause boundary: a requirement in one clause says nothing about PEM in the next
PEM_CLAUSE_SPLIT = re.compile(r";|,?\s+(?:but|whereas|while|although)\s+|:\s", _I)
PEM_NOT_REQUIRED = re.compile(
    r"\b(?:not\s+(?:required|mandatory|compulsory|necessary|an?\s+inclusion\s+criteri\w+|a\s+requirement)|"
    r"without\s+(?:requiring|the\s+requirement)|regardless\s+of|irrespective\s+of|did\s+not\s+require|"
    r"no\s+requirement|optional|whether\s+or\s+not|with\s+or\s+without|did\s+not\s+(?:need|have)\s+to|"
    r"need\s+not|not\s+needed|no\s+need|were\s+not\s+required|was\s+not\s+required)\b", _I)
PEM_WITH_ENROL = re.compile(
    r"\b(?:recruit\w*|enrol\w*|select\w*|eligible|included)\b[^.;]{0,80}?\b(?:with|reporting|experiencing|who\s+"
    r"(?:had|reported|experienced|have|report|experience))\b[^.;]{0,30}?(?:post[\s-]?exertional\s+malaise|\bPEM\b)", _I)
DEFINITIONAL_PRESENT = re.compile(
    r"\b(?:requires|require|mandates|mandate|is\s+(?:required|mandatory|compulsory|a\s+(?:cardinal|core|hallmark|"
    r"defining|key|required|mandatory))|are\s+required|is\s+an?\s+(?:essential|obligatory))\b", _I)

# --- design -----------------------------------------------------------------------------------
PUBLICATION_TYPE_DESIGN: dict[str, str] = {
    "randomized controlled trial": "rct",
    "meta-analysis": "meta_analysis",
    "systematic review": "review",
    "review": "review",
    "scoping review": "review",
    "case reports": "case_report",
    "editorial": "commentary",
    "comment": "commentary",
    "letter": "commentary",
    "news": "commentary",
    "newspaper article": "commentary",
    "published erratum": "commentary",
    "retraction notice": "commentary",
    "retraction of publication": "commentary",
    "expression of concern": "commentary",
    "patient education handout": "commentary",
    "interview": "commentary",
    "biography": "commentary",
    "clinical trial protocol": "protocol",
    "practice guideline": "review",
    "guideline": "review",
    "consensus development conference": "case_definition",
    "observational study": "cohort",
    "twin study": "cohort",
}
MESH_DESIGN: dict[str, str] = {
    "case-control studies": "case_control",
    "cohort studies": "cohort",
    "prospective studies": "cohort",
    "retrospective studies": "cohort",
    "longitudinal studies": "cohort",
    "follow-up studies": "cohort",
    "cross-sectional studies": "cross_sectional",
    "surveys and questionnaires": "cross_sectional",
}
# (design, strength, pattern, sources where the cue counts). A "strong" cue names the design
# ("a cross-sectional study", "randomised controlled trial"); a "weak" cue only hints at it
# ("healthy controls", "follow-up"). Strong cues are recorded with the source as basis, weak
# ones with basis "text_hint", which the policy ranks after every other basis.
_TA = ("title", "abstract", "methods")
_DASH = r"[\s\-\u2010-\u2015/]+"
DESIGN_PATTERNS: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("protocol", "strong", r"\bstudy\s+protocol\b|\bprotocol\s+(?:for|of)\s+(?:a|an|the)\b|\btrial\s+protocol\b|"
                           r"\bthis\s+protocol\b|\bwill\s+be\s+(?:randomi[sz]ed|recruited|enrolled|allocated|randomly)\b", _TA),
    ("protocol", "strong", r"\bprotocol\b", ("title",)),
    ("meta_analysis", "strong", r"\bmeta[\s-]?analy(?:sis|ses|tic)\b", _TA),
    ("review", "strong", r"(?<!and )\breview\b|\boverview\b|\bevidence\s+summary\b|\bstate\s+of\s+the\s+art\b|"
                         r"\bcritical\s+appraisal\b", ("title",)),
    ("review", "strong", r"\b(?:systematic|scoping|"
                         r"narrative|literature|umbrella|rapid|integrative|critical|comprehensive|mini)[\s-]+review\b|"
                         r"\bthis\s+review\b|\bin\s+this\s+review\b|\bwe\s+review\w*\b|\bthe\s+present\s+review\b|"
                         r"\b(?:this|a|our)\s+critical\s+appraisal\b|"
                         r"\b(?:aims?|aimed)\s+to\s+review\b|\bthis\s+(?:article|paper|chapter)\s+(?:reviews|"
                         r"summari[sz]es|discusses|explains|chronicles|outlines)\b|\bwe\s+(?:discuss|summari[sz]e|"
                         r"outline)\s+(?:the\s+)?(?:current|recent|existing|available|evidence|literature|state)\b|"
                         r"\bPRISMA\b|\b(?:PubMed|MEDLINE|Embase|Web\s+of\s+Science|Scopus|Cochrane|CINAHL|PsycINFO)\b"
                         r"[^.]{0,120}\b(?:were|was)\s+searched\b|\bsearched\s+(?:PubMed|MEDLINE|Embase|Web\s+of\s+"
                         r"Science|Scopus|Cochrane|the\s+literature|databases|electronic\s+databases)\b|"
                         # "Eight trials were included": other studies are this paper's material
                         r"\b(?:[3-9]|\d{2,4}|three|four|five|six|seven|eight|nine|ten|eleven|twelve|\w+teen|twenty|thirty|"
                         r"forty|fifty)\s+(?:randomi[sz]ed\s+(?:controlled\s+)?|clinical\s+|observational\s+|primary\s+)?"
                         r"(?:trials|studies|articles|papers|RCTs|publications|reports)\s+(?:were|was)\s+(?:included|"
                         r"identified|selected|eligible|reviewed|analy[sz]ed)\b", ("abstract", "methods")),
    ("case_definition", "strong", r"\b(?:case\s+definition|working\s+definition|diagnostic\s+criteria|consensus\s+criteria|"
                                  r"clinical\s+criteria|guidelines\s+for\s+research|approach\s+to\s+its\s+definition|"
                                  r"redefining|clinical\s+working\s+case\s+definition)\b", ("title",)),
    ("case_definition", "strong", r"\b(?:we|this\s+paper|this\s+report|the\s+panel|the\s+committee|the\s+authors)\s+"
                                  r"(?:propose|proposes|present|presents|recommend|recommends|developed)\s+(?:a\s+|an\s+|"
                                  r"the\s+)?(?:new\s+|revised\s+|updated\s+|systematic\s+)?(?:clinical\s+)?(?:working\s+)?"
                                  r"(?:case\s+definition|diagnostic\s+criteria|criteria|clinical\s+definition|name)\b|"
                                  r"\b(?:expert|consensus|international)\s+panel\b", ("abstract",)),
    ("commentary", "strong", r"^\s*(?:commentary|editorial|comment|letter|reply|response|correspondence|viewpoint|"
                             r"perspective|opinion|in\s+memoriam|erratum|correction|retraction|notification|news)\b|"
                             r"\b(?:commentary|editorial|viewpoint|letter\s+to\s+the\s+editor|a\s+perspective|"
                             r"an\s+opinion)\b|\bwhat\s+scientists\s+think\b", ("title",)),
    ("commentary", "strong", r"\bthis\s+(?:commentary|editorial|perspective|viewpoint|opinion\s+piece|letter|essay)\b|"
                             r"\bin\s+this\s+(?:commentary|editorial|perspective|viewpoint|essay)\b", ("abstract",)),
    ("case_report", "strong", r"\bcase\s+reports?\b|\bwe\s+(?:report|describe|present)\s+(?:a|the|an)\s+(?:\w+\s+){0,3}"
                              r"(?:case|patient|woman|man|girl|boy)\b|\ba\s+case\s+of\b|\bthis\s+case(?!" + _DASH +
                              r"control)\b|\bcase[\s-]+series\b|\b\d{1,3}[\s-]year[\s-]old\s+(?:\w+\s+)?(?:man|woman|"
                              r"male|female|boy|girl|patient)\b|\bcase\s+study\s+of\s+(?:a|an|one)\b|"
                              r"\bpersonal\s+experience\b", _TA),
    ("rct", "strong", r"\brandomi[sz]ed[\s,]+(?:(?:double|single|triple|observer|assessor)[\s-]+blind(?:ed)?[\s,]+|"
                      r"placebo[\s-]+controlled[\s,]+|controlled[\s,]+|clinical[\s,]+|cross[\s-]?over[\s,]+|pilot[\s,]+|"
                      r"feasibility[\s,]+|multi-?cent(?:er|re)[\s,]+|parallel[\s-]+group[\s,]+|sham[\s-]+controlled[\s,]+|"
                      r"phase\s+\w+[\s,]+|and\s+|,\s*)*(?:trial|study)\b|\bRCT\b|\bwere\s+randomi[sz]ed\b|"
                      r"\brandomly\s+(?:assigned|allocated)\b|\brandomi[sz]ed\s+(?:to|into)\b|"
                      r"\b(?:block|cluster|stratified)[\s-]+randomi[sz]ed\b|\bplacebo[\s-]+controlled\b", _TA),
    ("other", "strong", r"\bmendelian\s+randomi[sz]ation\b|\bqualitative\s+(?:study|interviews?|analysis|research)\b|"
                        r"\bfocus\s+groups?\b|\bsemi[\s-]structured\s+interviews?\b|\bin\s+vitro\b|\bmice\b|\bmouse\b|"
                        r"\brats?\b|\brodents?\b|\banimal\s+models?\b|\bopen[\s-]label\b|\bsingle[\s-]arm\b|"
                        r"\bnon[\s-]?randomi[sz]ed\b|\bquasi[\s-]?random\w*\b|\buncontrolled\b|\bin\s+silico\b|"
                        r"\bX\s+\(Twitter\)", _TA),
    ("case_control", "strong", r"\bcase" + _DASH + r"control(?:led)?\b", _TA),
    ("cohort", "strong", r"\bcohort\s+(?:study|studies|analysis|design)\b|\b(?:prospective|retrospective|longitudinal|"
                         r"population-based|observational|registry(?:-based)?|follow-up)\s+(?:\w+\s+)?(?:study|analysis|"
                         r"investigation)\b|\bregistry\s+(?:linkage\s+)?study\b", _TA),
    ("cross_sectional", "strong", r"\bcross[\s-]sectional\b|\bsurvey(?:ed|s)?\b|\bquestionnaire[\s-]based\b|"
                                  r"\bonline\s+questionnaire\b|\bpsychometric\b|\bRasch\b|\bvalidation\s+study\b|"
                                  r"\bfactor\s+analys[ie]s\b|\bdescriptive\s+(?:analysis|study)\b", _TA),
    ("case_control", "weak", r"\b(?:healthy|matched|sedentary|age-matched|sex-matched)\s+(?:\w+\s+)?controls?\b|"
                             r"\bcontrol\s+(?:group|subjects|participants)\b|\bHCs?\b|\bcompared\s+(?:with|to)\s+"
                             r"(?:\w+\s+){0,3}controls\b|\bversus\s+(?:healthy\s+)?controls\b", _TA),
    ("cohort", "weak", r"\bcohort\b|\bprospective(?:ly)?\b|\blongitudinal\b|\bfollow[\s-]?up\b|\bfollowed\s+(?:up\s+)?for\b|"
                       r"\bretrospective(?:ly)?\b|\bregistry\b|\bpopulation[\s-]based\b|\bdatabase\b|\bclaims\s+data\b|"
                       r"\belectronic\s+health\s+records?\b|\brecords\s+of\b", _TA),
    ("other", "weak", r"\bmulti-?omics\b|\bmachine\s+learning\b|\bdeep\s+learning\b|\bmodel(?:l)?ing\b|\bpilot\b", _TA),
]

# --- population -------------------------------------------------------------------------------
POPULATION_PATTERNS: list[tuple[str, str]] = [
    ("paediatric", r"\bchildren\b|\badolescen\w+|\bp(?:a)?ediatric\b|\byouths?\b|\bteenagers?\b|\bjuvenile\b|"
                   r"\byoung\s+people\b|\bschool[\s-]?(?:age|aged|children|students)\b|\bminors\b"),
    ("adult", r"\badults?\b|\baged\s+(?:1[89]|[2-9]\d)\s*(?:-|–|to)\s*\d+\b|(?:≥|>=)\s*18\s+years"),
    ("long_covid", r"\blong[\s-]+COVID\b|\bpost[\s-]+COVID\b|\bpost[\s-]+acute\s+sequelae\b|\bPASC\b|"
                   r"\bpost[\s-]+COVID[\s-]+19\s+condition\b|\bpost-COVID-19\b|\bLong\s+Covid\b"),
]

# Cheap gates: a pattern runs on a source only if one of its words occurs there (a substring test
# on the lower-cased text, or on the text itself for words written "=LIKE_THIS"). Most abstracts
# name no definition, so most patterns never run: this is what keeps extraction fast.
DEFINITION_GATES: dict[str, tuple[str, ...]] = {
    "fukuda_1994": ("fukuda", "study group", "cdc", "disease control"),
    "holmes_1988": ("holmes", "cdc", "disease control"),
    "nice_2021": ("nice", "excellence", "ng206", "ng 206"),
    "nice_2007": ("nice", "excellence", "cg53", "cg 53"),
    "icc_2011": ("carruthers", "international consensus", "icc"),
    "ccc_2003": ("carruthers", "canadian", "ccc"),
    "iom_2015": ("=IOM", "institute of medicine", "academ", "=NAM", "exertion intolerance", "=SEID"),
    "oxford_1991": ("oxford", "sharpe"),
    "london": ("london", "dowsett"),
    "ramsay": ("ramsay",),
    "reeves_2005": ("empiric", "reeves"),
    "pediatric_2006": ("ediatric", "jason"),
    "other": ("australian", "lloyd", "g93", "8e49", "japanese"),
    "nice": ("nice", "excellence"),
    "cdc": ("cdc", "disease control"),
}
DESIGN_GATES: dict[tuple[str, str], tuple[str, ...]] = {
    ("protocol", "strong"): ("protocol", "will be"),
    ("meta_analysis", "strong"): ("meta",),
    ("review", "strong"): ("review", "overview", "summary", "state of the art", "prisma", "searched", "this article",
                           "were included", "were identified", "were selected", "were eligible", "were analy",
                           "appraisal",
                           "this paper", "this chapter", "we discuss", "we summari", "we outline"),
    ("case_definition", "strong"): ("definition", "criteria", "guidelines", "redefining", "panel", " name"),
    ("commentary", "strong"): ("comment", "editorial", "letter", "reply", "response", "correspondence", "viewpoint",
                               "perspective", "opinion", "memoriam", "erratum", "correction", "retraction",
                               "notification", "news", "scientists", "essay"),
    ("case_report", "strong"): ("case", "year-old", "year old", "personal experience", "we report", "we describe",
                                "we present"),
    ("rct", "strong"): ("random", "rct", "placebo"),
    ("other", "strong"): ("mendelian", "qualitative", "focus group", "semi-structured", "semi structured", "in vitro",
                          "mice", "mouse", " rat", "rodent", "animal model", "open-label", "open label", "single-arm",
                          "single arm", "non-random", "nonrandom", "non random", "quasi", "uncontrolled", "in silico",
                          "twitter"),
    ("case_control", "strong"): ("control",),
    ("cohort", "strong"): ("cohort", "prospective", "retrospective", "longitudinal", "population", "observational",
                           "registry", "follow"),
    ("cross_sectional", "strong"): ("cross", "survey", "questionnaire", "psychometric", "rasch", "validation",
                                    "factor analys", "descriptive"),
    ("case_control", "weak"): ("control", "=HC"),
    ("cohort", "weak"): ("cohort", "prospective", "longitudinal", "follow", "retrospective", "registry", "population",
                         "database", "claims", "health record", "records of"),
    ("other", "weak"): ("omics", "learning", "modeling", "modelling", "pilot"),
}
POPULATION_GATES: dict[str, tuple[str, ...]] = {
    "paediatric": ("child", "adolescen", "ediatric", "youth", "teenager", "juvenile", "young people", "school",
                   "minors"),
    "adult": ("adult", "aged", "18 years"),
    "long_covid": ("covid", "=PASC", "sequelae"),
}
PEM_TERM_GATE: tuple[str, ...] = ("exertion", "=PEM", "=PESE", "=PENE")
PEM_MEASURE_GATE: tuple[str, ...] = ("depaul", "dsq", "cpet", "cardiopulmonary")


class Gate:
    """Words of which one must occur for a pattern to be worth running."""

    __slots__ = ("folded", "exact")

    def __init__(self, words: tuple[str, ...]) -> None:
        self.folded = tuple(w for w in words if not w.startswith("="))
        self.exact = tuple(w[1:] for w in words if w.startswith("="))

    def open(self, text: str, lower: str) -> bool:
        for word in self.folded:
            if word in lower:
                return True
        for word in self.exact:
            if word in text:
                return True
        return False

    def sentences(self, text: str, lower: str, starts: list[int]) -> list[int]:
        """Indices of the sentences holding one of the words, in order (patterns then run only there)."""
        found: set[int] = set()
        for words, haystack in ((self.folded, lower), (self.exact, text)):
            for word in words:
                at = haystack.find(word)
                while at >= 0:
                    found.add(max(0, bisect.bisect_right(starts, at) - 1))
                    at = haystack.find(word, at + 1)
        return sorted(found)


CLASSIFICATION = re.compile(
    r"(?:\d+(?:\.\d+)?\s?%|\bpercent\b|\bproportion\b|\bsubset\b|\bminority\b|\bmajority\b|\bprevalence\b|"
    r"\bonly\s+(?:a\s+)?(?:few|some)\b).{0,80}?\b(?:met|meet|meeting|satisf\w+|fulfil\w*|fit|fits|fitting)\b"
    r".{0,40}?\bcriteria\b|\bcriteria\s+(?:were|was)\s+used\s+to\s+(?:determine|identify|classify|define)\s+"
    r"(?:the\s+)?(?:\w+\s+){0,6}?(?:phenotype|subgroup|subtype|cases|prevalence)\b|"
    r"\bME/CFS\s+was\s+diagnosed\s+in\s+\w+|\b(?:met|meeting|fulfill?ed|satisfied)\s+(?:the\s+)?(?:\w+\s+)?"
    r"(?:diagnostic\s+)?criteria\s+for\s+(?:the\s+)?(?:ME/CFS|CFS|ME|myalgic|chronic\s+fatigue)[^.]{0,40}?"
    r"\(\s*\d+(?:\.\d+)?\s?%", _I)

_ABBREVIATIONS = frozenset(
    "al e.g i.e vs etc fig figs eq ref refs dr mr mrs ms prof no nos approx ca cf st jr sr inc ltd co resp "
    "incl vol pp ed eds sec min max avg est".split())
_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*\s+(?=[A-Z0-9(\[\"'“‘])|\n\s*\n|\n(?=[A-Z0-9•\-–*])")
_WORD_BEFORE = re.compile(r"([A-Za-z.]+)\.$")
_ICC_NUMERIC_AFTER = re.compile(r"^\s*(?:[=<>≥≤]|\(\s*95|of\s+0?\.\d|was\s+0?\.\d|values?\b|0?\.\d|for\s+\w+\s+was)")
_CDC_CRITERIA_AHEAD = re.compile(rf"^[^.;:]{{0,40}}?\b(?i:{_CRIT})\b")
STUDY_TITLE = re.compile(
    r"\b(?:according\s+to|in\s+(?:patients|individuals|people|adults|children|adolescents|women|men)|evaluating|"
    r"comparing|compared|among|prevalence|patients|individuals|participants|cohort|trial|assessment|"
    r"examining|using|association|associated)\b", _I)
_EARLIER_WORK = re.compile(r"\b(?:previous|prior|recent|earlier|existing)\s+$", _I)
_COMPARED_AFTER = re.compile(
    r"[^.;]{0,40}?\b(?:(?:were|was|are)\s+(?:compared|contrasted)(?!\s+(?:with|to)\s+[^.;]{0,40}?\b(?:controls?|"
    r"patients|participants|subjects|individuals|people|volunteers|groups?)\b)|differ(?:ed|s)?\b|overlap(?:ped|s)?\b|"
    r"agree(?:d|s)?\b|identif(?:ied|y)\s+different)", _I)
_CRITERIA_OF_BEHIND = re.compile(r"(?i:criteria|definition)\s+(?:of|from|by)\s+(?:the\s+)?(?:US\s+)?$")


@dataclass(slots=True)
class _Match:
    key: str
    start: int
    end: int


@dataclass(slots=True)
class _Group:
    members: list[_Match] = field(default_factory=list)
    connectors: list[str] = field(default_factory=list)


class Patterns:
    """Every compiled pattern the extractor uses, built once and shared across papers."""

    def __init__(self) -> None:
        # definitions: one regex per key, each behind its gate; "d<index>" groups keep the table order,
        # which breaks ties between matches that start at the same place (specific patterns first)
        self.definitions: list[tuple[Gate, re.Pattern[str]]] = []
        for key, words in DEFINITION_GATES.items():
            parts = [f"(?P<d{i}>{pattern})" for i, (k, pattern) in enumerate(DEFINITION_PATTERNS) if k == key]
            self.definitions.append((Gate(words), re.compile("|".join(parts))))
        self.definition_keys = {f"d{i}": key for i, (key, _) in enumerate(DEFINITION_PATTERNS)}
        # designs: one regex per (source, strength, design) behind its gate; other sources' alternatives
        # must not consume text
        self.designs: dict[tuple[str, str], list[tuple[Gate, str, re.Pattern[str]]]] = {}
        for source in ("title", "abstract", "methods"):
            for strength in ("strong", "weak"):
                entries = []
                for design in dict.fromkeys(d for d, st, _, srcs in DESIGN_PATTERNS if st == strength and source in srcs):
                    patterns = [p for d, st, p, srcs in DESIGN_PATTERNS if d == design and st == strength and source in srcs]
                    entries.append((Gate(DESIGN_GATES[(design, strength)]), design,
                                    re.compile("|".join(f"(?:{p})" for p in patterns), _I | re.MULTILINE)))
                self.designs[(source, strength)] = entries
        self.population = [(Gate(POPULATION_GATES[value]), value, re.compile(pattern, _I))
                           for value, pattern in POPULATION_PATTERNS]
        self.pem_term_gate = Gate(PEM_TERM_GATE)
        self.pem_measure_gate = Gate(PEM_MEASURE_GATE)


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans (start, end) with surrounding whitespace trimmed; abbreviations do not split."""
    spans: list[tuple[int, int]] = []
    begin = 0
    for m in _SENTENCE_END.finditer(text):
        if text[m.start()] == ".":
            word = _WORD_BEFORE.search(text, max(0, m.start() - 12), m.start() + 1)
            if word:
                token = word.group(1).rstrip(".")
                if token.split(".")[-1].lower() in _ABBREVIATIONS or (len(token) == 1 and token.isupper()):
                    continue  # "et al.", "e.g.", initials such as "J. Smith"
        _add_span(text, begin, m.start() + len(m.group(0).rstrip()), spans)
        begin = m.end()
    _add_span(text, begin, len(text), spans)
    return spans


def _add_span(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> None:
    while start < end and text[start].isspace():
        start += 1
    # keep closing quotes/brackets that belong to the sentence
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start:
        spans.append((start, end))


class Extractor:
    """The rule-based extractor. Build once (it compiles the patterns), call ``extract`` per paper."""

    name = "rules"

    def __init__(self, patterns: Patterns | None = None) -> None:
        self.p = patterns or Patterns()

    def extract(self, paper: PaperText, *, pmid: str | None = None) -> Facts:
        """Facts of one paper (``pmid`` is accepted for parity with the LLM extractor and unused)."""
        facts = Facts(scanner_version=SCANNER_VERSION, extractor=self.name, year=paper.year)
        group_counter = [0]
        for source in ("title", "abstract", "methods"):
            text = paper.source(source)
            if not text:
                continue
            lower = text.lower()
            sentences = split_sentences(text)
            starts = [s for s, _ in sentences]
            self._definitions(text, lower, source, sentences, starts, facts, group_counter)
            self._pem(text, lower, source, sentences, starts, facts)
            self._designs(text, lower, source, sentences, starts, facts)
            self._population(text, lower, source, sentences, starts, facts)
            self._classifications(text, lower, source, sentences, facts)
        self._list_designs(paper, facts)
        return facts

    # -- definitions ------------------------------------------------------------------------
    def _definitions(self, text: str, lower: str, source: str, sentences: list[tuple[int, int]], starts: list[int],
                     facts: Facts, group_counter: list[int]) -> None:
        if not sentences:
            return
        matches = self._definition_matches(text, lower, sentences, starts)
        if not matches:
            return
        by_sentence: dict[int, list[_Match]] = {}
        for m in matches:
            index = bisect.bisect_right(starts, m.start) - 1
            if index < 0:
                index = 0
            by_sentence.setdefault(index, []).append(m)
        for index, found in by_sentence.items():
            s_start, s_end = sentences[index]
            self._sentence_mentions(text, source, s_start, s_end, found, facts, group_counter)

    def _definition_matches(self, text: str, lower: str, sentences: list[tuple[int, int]],
                            starts: list[int]) -> list[_Match]:
        candidates: list[tuple[int, int, int, str]] = []
        for gate, pattern in self.p.definitions:
            if not gate.open(text, lower):
                continue
            for index in gate.sentences(text, lower, starts):
                s_start, s_end = sentences[index]
                for m in pattern.finditer(text, s_start, s_end):
                    name = m.lastgroup  # type: ignore[assignment]
                    candidates.append((m.start(), int(name[1:]), m.end(), self.p.definition_keys[name]))
        candidates.sort()
        found: list[_Match] = []
        taken_until = -1
        for start, _index, end, key in candidates:
            if start < taken_until:
                continue  # inside a match that starts earlier (or is listed first at the same place)
            taken_until = end
            if key == "icc_2011" and text[start:start + 3] == "ICC" and not text[start:end].endswith(("a", "n")):
                if _ICC_NUMERIC_AFTER.match(text[end:end + 30]) or (
                        ("intraclass" in lower or "intra-class" in lower) and "international consensus" not in lower):
                    continue
            if key == "cdc" and not re.search(_CRIT, text[start:end], _I):
                if not (_CDC_CRITERIA_AHEAD.match(text[end:end + 60])
                        or _CRITERIA_OF_BEHIND.search(text[max(0, start - 40):start])):
                    continue
            if found and found[-1].key == key and _only_filler(text[found[-1].end:start]):
                found[-1].end = end  # "Canadian Consensus Criteria (CCC)": one mention
                continue
            found.append(_Match(key, start, end))
        return found

    def _sentence_mentions(self, text: str, source: str, s_start: int, s_end: int, found: list[_Match],
                           facts: Facts, group_counter: list[int]) -> None:
        sentence = text[s_start:s_end]
        # group consecutive names joined only by connectors ("Fukuda and/or CCC")
        groups: list[_Group] = []
        for m in found:
            if groups:
                between = text[groups[-1].members[-1].end:m.start]
                residue = _FILLER.sub(" ", between)
                before_list = text[max(s_start, groups[-1].members[0].start - 30):groups[-1].members[0].start]
                if _CONNECTOR_OK.match(residue) and len(between) < 80 and not COMPARE_CONNECTOR.search(between) \
                        and not re.search(r"\b(?:unlike|in\s+contrast\s+to)\s+(?:the\s+)?$", before_list, _I):
                    groups[-1].members.append(m)
                    groups[-1].connectors.append(residue.strip().lower())
                    continue
            groups.append(_Group([m]))
        distinct = {m.key for m in found}
        anchored = bool(STUDY_ANCHOR.search(sentence)) and not (
            GENERIC_DEFINITIONAL.search(sentence) and not re.search(r"\b(?:we|our|were|was|will)\b", sentence, _I))
        previous_end = s_start
        sentence_compares = len(distinct) > 1 and bool(COMPARE_CUE.search(sentence))
        quote_start, quote_end = _quote_window(text, s_start, s_end, found[0].start, found[-1].end)
        quote = text[quote_start:quote_end]
        # "18 meeting the ICC and 24 meeting the Fukuda criteria": counted classes that partition the
        # sample are alternatives (any-of), whatever joins them
        counted, cursor = [], s_start
        for group in groups:
            counted.append(bool(PARTITION_BEFORE.search(text[max(cursor, group.members[0].start - 40):group.members[0].start])))
            cursor = group.members[-1].end
        partition_keys = list(dict.fromkeys(m.key for g, c in zip(groups, counted) if c for m in g.members))
        partition = sum(counted) >= 2 and len(partition_keys) >= 2
        shared: tuple[int, str] | None = None
        for g_index, group in enumerate(groups):
            first, last = group.members[0], group.members[-1]
            left = text[previous_end:first.start]
            clause_left = text[s_start:first.start] if g_index == 0 else left
            right_end = groups[g_index + 1].members[0].start if g_index + 1 < len(groups) else s_end
            right = text[last.end:right_end]
            if partition and counted[g_index] and shared is not None:
                group_id, role = shared
                mode = "any_of"
            else:
                role = self._role(sentence, clause_left, left, right, first, groups, g_index, text, s_start,
                                  sentence_compares, anchored)
                mode = _mode(group, clause_left, right)
                group_counter[0] += 1
                group_id = group_counter[0]
                if partition and counted[g_index]:
                    shared = (group_id, role)
                    mode = "any_of"
            sentence_negation_flip = bool(EXCLUSION.search(sentence))
            modified_sentence = bool(MODIFIED_SENTENCE.search(sentence))
            for member_index, m in enumerate(group.members):
                member_left = text[(group.members[member_index - 1].end if member_index else previous_end):m.start]
                local = text[max(s_start, m.start - 60):m.start]
                negated = _negated_before(local) and (member_index == 0 or _negated_before(member_left))
                if not negated and member_index == len(group.members) - 1:
                    negated = bool(NEGATION_AFTER.match(text[m.end:m.end + 60]))  # "the CCC was not used"
                if negated and sentence_negation_flip:
                    negated = False  # "patients not meeting the CCC were excluded" is an inclusion rule
                modified = bool(MODIFIED_BEFORE.search(text[max(s_start, m.start - 40):m.start])) or modified_sentence
                facts.mentions.append(Mention(
                    criterion=m.key, text=text[m.start:m.end], role=role, group=group_id, negated=negated,
                    modified=modified, source=source, start=quote_start, end=quote_end, quote=quote,
                    match_start=m.start, match_end=m.end))
            previous_end = last.end
            if partition and counted[g_index]:
                continue  # one combination for the whole partition, below
            keys = list(dict.fromkeys(m.key for m in group.members))
            facts.combinations.append(Combination(
                group=group_id, mode=mode if len(keys) > 1 else "single", criteria=keys, role=role,
                source=source, start=quote_start, end=quote_end, quote=quote))
        if partition and shared is not None:
            facts.combinations.append(Combination(
                group=shared[0], mode="any_of", criteria=partition_keys, role=shared[1], source=source,
                start=quote_start, end=quote_end, quote=quote))

    def _role(self, sentence: str, clause_left: str, left: str, right: str, first: _Match, groups: list[_Group],
              g_index: int, text: str, s_start: int, sentence_compares: bool, anchored: bool) -> str:
        # exclusion: "patients meeting the Oxford criteria were excluded", "exclusion criteria: ... the CCC"
        # (a negated mention in such a sentence is an inclusion rule, handled with the negation)
        excluded = EXCLUDED_AFTER.match(right)
        if (excluded and not INCLUDED_WORD.search(excluded.group(1)) or EXCLUDED_BEFORE.search(clause_left[-100:])) \
                and not NEGATION_BEFORE.search(clause_left[-60:]):
            return "exclusion"
        # "the Fukuda criteria rather than the CCC": the first applied, the second only named
        if g_index > 0 and ALTERNATIVE_CONNECTOR.search(left) and not PARTICIPANT_PHRASE.search(left):
            return "background"
        alternative_next = g_index + 1 < len(groups) and bool(ALTERNATIVE_CONNECTOR.search(right))
        # comparison of definitions: "CCC versus Fukuda", "we compared the Fukuda and CCC criteria"
        if g_index > 0 and COMPARE_CONNECTOR.search(left) and not PARTICIPANT_PHRASE.search(left):
            return "comparison"
        if g_index + 1 < len(groups) and not alternative_next and COMPARE_CONNECTOR.search(right) \
                and not PARTICIPANT_PHRASE.search(right):
            return "comparison"
        if SEPARATELY_AFTER.match(right):
            return "subgroup"  # "those meeting the ICC were analysed separately"
        if sentence_compares:
            group_at = first.start - s_start
            for cue in COMPARE_CUE.finditer(sentence, 0, group_at):
                if not PARTICIPANT_PHRASE.search(sentence, cue.end(), group_at) and not re.match(
                        r"\s*(?:group|cohort|arm|condition|sample)s?\b", sentence[cue.end():cue.end() + 12], _I):
                    return "comparison"
            if _COMPARED_AFTER.match(right) or (g_index + 1 < len(groups) and _COMPARED_AFTER.match(
                    text[groups[-1].members[-1].end:s_start + len(sentence)])):
                return "comparison"
        # subgroup: "of whom most also met the ICC", "a subgroup fulfilled the CCC"
        subgroup = SUBGROUP_CUE.search(left) or (g_index == 0 and SUBGROUP_CUE.search(clause_left))
        if not subgroup and (PREVALENCE_AFTER.match(right) or GROUP_LABEL_AFTER.match(right)):
            return "subgroup"  # "... identified CFS in 2.3%", "the ICC and Fukuda classes": labels of groups
        if subgroup:
            cue_text = subgroup.group(0).lower()
            if cue_text.startswith(("also", "additionally")) and ALL_QUANTIFIER.search(clause_left) and not \
                    re.search(r"\b(?:of\s+whom|of\s+these|of\s+them|some|most|many|\d)", clause_left, _I):
                return "inclusion"
            return "subgroup"
        # background: named as an example, or described rather than applied
        if BACKGROUND_BEFORE.search(left[-60:]) or BACKGROUND_AFTER.match(right):
            if not re.search(r"\b(?:we|our|were\s+(?:diagnosed|recruited|included|enrolled|selected)|"
                             r"(?:met|fulfill?ed|satisfied|meeting|fulfill?ing))\b", left, _I):
                return "background"
        if not anchored or _literature_clause(sentence, first.start - s_start):
            return "background"
        if first.key in ("cdc", "nice") and OTHER_DISEASE.search(clause_left) and not ME_CFS_TERM.search(
                clause_left + right[:60]):
            return "background"  # "MS cases ... according to NICE guideline": another disease's definition
        if INCLUSION_CUE.search(clause_left[-100:]) or INCLUSION_CUE.search(right[:60]):
            return "inclusion"
        return "background"

    # -- PEM --------------------------------------------------------------------------------
    def _pem(self, text: str, lower: str, source: str, sentences: list[tuple[int, int]], starts: list[int],
             facts: Facts) -> None:
        seen: set[int] = set()
        hits: list[int] = []
        if self.p.pem_term_gate.open(text, lower):
            hits.extend(m.start() for m in PEM_TERM.finditer(text))
        if self.p.pem_measure_gate.open(text, lower):
            hits.extend(m.start() for m in PEM_MEASURE_ONLY.finditer(text))
        for position in hits:
            index = max(0, bisect.bisect_right(starts, position) - 1)
            if index in seen or index >= len(sentences):
                continue
            seen.add(index)
            s_start, s_end = sentences[index]
            sentence = text[s_start:s_end]
            kind = _pem_kind(sentence)
            if kind is None:
                continue
            q_start, q_end = _quote_window(text, s_start, s_end, position, position + 1)
            facts.pem.append(PemStatement(kind=kind, source=source, start=q_start, end=q_end,
                                          quote=text[q_start:q_end]))

    # -- design -----------------------------------------------------------------------------
    def _designs(self, text: str, lower: str, source: str, sentences: list[tuple[int, int]], starts: list[int],
                 facts: Facts) -> None:
        if not sentences:
            return
        for strength in ("strong", "weak"):
            for gate, design, pattern in self.p.designs[(source, strength)]:
                if not gate.open(text, lower):
                    continue
                for index in gate.sentences(text, lower, starts):
                    s_start, s_end = sentences[index]
                    m = pattern.search(text, s_start, s_end)
                    while m is not None and (
                            (design == "rct" and re.search(r"mendelian\s*$", text[max(0, m.start() - 12):m.start()], _I))
                            or (design == "review" and _EARLIER_WORK.search(text, max(0, m.start() - 12), m.start()))):
                        m = pattern.search(text, m.end(), s_end)  # "Mendelian randomization", "previous reviews"
                    if m is None:
                        continue
                    if design == "case_definition" and source == "title" and STUDY_TITLE.search(text):
                        continue  # "Blood tests according to diagnostic criteria in ...": a study, not a definition
                    q_start, q_end = _quote_window(text, s_start, s_end, m.start(), m.end())
                    facts.designs.append(DesignCue(design=design, basis=source if strength == "strong" else "text_hint",
                                                   source=source, start=q_start, end=q_end, quote=text[q_start:q_end]))
                    break  # the first cue of a design in a source is its evidence

    def _list_designs(self, paper: PaperText, facts: Facts) -> None:
        for source, table, basis in (("publication_types", PUBLICATION_TYPE_DESIGN, "publication_type"),
                                     ("mesh_terms", MESH_DESIGN, "mesh")):
            joined = paper.source(source)
            if not joined:
                continue
            position = 0
            for item in joined.split("; "):
                start = position
                position += len(item) + 2
                name = item.split("/")[0].strip().rstrip("*").lower()
                design = table.get(name)
                if design:
                    facts.designs.append(DesignCue(design=design, basis=basis, source=source, start=start,
                                                   end=start + len(item), quote=item))

    # -- population -------------------------------------------------------------------------
    def _population(self, text: str, lower: str, source: str, sentences: list[tuple[int, int]], starts: list[int],
                    facts: Facts) -> None:
        have = {p.value for p in facts.population}
        for gate, value, pattern in self.p.population:
            if value in have or not gate.open(text, lower):
                continue
            m = pattern.search(text)
            if m is None:
                continue
            index = max(0, bisect.bisect_right(starts, m.start()) - 1)
            s_start, s_end = sentences[index] if sentences else (0, len(text))
            q_start, q_end = _quote_window(text, s_start, s_end, m.start(), m.end())
            facts.population.append(PopulationCue(value=value, source=source, start=q_start, end=q_end,
                                                  quote=text[q_start:q_end]))

    def _classifications(self, text: str, lower: str, source: str, sentences: list[tuple[int, int]],
                         facts: Facts) -> None:
        if "criteria" not in lower and "diagnosed in" not in lower:
            return
        for s_start, s_end in sentences:
            piece = lower[s_start:s_end]
            if "criteria" not in piece and "diagnosed in" not in piece:
                continue
            m = CLASSIFICATION.search(text, s_start, s_end)
            if m:
                facts.classifications.append(Classification(source=source, start=m.start(), end=m.end(),
                                                            quote=text[m.start():m.end()]))
                return


def _negated_before(text: str) -> bool:
    """A negation ending just before a name: "did not meet the", "none of the patients met the"."""
    return bool(NEGATION_BEFORE.search(text) or NO_ONE_MET_BEFORE.search(text))


def _literature_clause(sentence: str, at: int) -> bool:
    """Whether the clause around position ``at`` reports other people's studies and not this one's."""
    start = max(sentence.rfind(";", 0, at), sentence.rfind(":", 0, at)) + 1
    ends = [i for i in (sentence.find(";", at), sentence.find(":", at)) if i >= 0]
    clause = sentence[start:min(ends) if ends else len(sentence)]
    return bool(LITERATURE_SENTENCE.search(clause)) and not OWN_STUDY.search(clause)


def _only_filler(between: str) -> bool:
    return len(between) < 40 and not _FILLER.sub("", between).strip()


def _mode(group: _Group, clause_left: str, right: str) -> str:
    if len(group.members) < 2:
        return "single"
    joined = " ".join(group.connectors)
    if EITHER.search(clause_left[-40:]) or EITHER.search(right[:20]) or "and/or" in joined.replace(" ", ""):
        return "any_of"
    if BOTH.search(clause_left[-40:]) or re.search(r"\bboth\b", joined):
        return "all_of"
    if _ANY_CONNECTOR.search(joined):
        return "any_of"
    if _ALL_CONNECTOR.search(joined):
        return "all_of"
    return "any_of"  # a bare list: the cautious reading (not every participant met every one)


def _pem_kind(sentence: str) -> str | None:
    """The strongest thing a sentence says about PEM, reading each clause that names it on its own."""
    kinds = [_pem_clause_kind(clause) for clause in PEM_CLAUSE_SPLIT.split(sentence) if clause.strip()]
    for kind in ("not_required", "required", "measured"):
        if kind in kinds:
            return kind
    return None


def _pem_measured_near(clause: str) -> bool:
    """A measuring word right beside a PEM term: "assesses PEM", "PEM was assessed", "severity of PEM"."""
    for term in PEM_TERM.finditer(clause):
        if PEM_MEASURE.search(clause, max(0, term.start() - 40), term.start()) or PEM_MEASURE.search(
                clause, term.end(), term.end() + 30):
            return True
    return False


def _pem_clause_kind(sentence: str) -> str | None:
    """What one clause says about PEM (the rules below were written for whole sentences, hence the name)."""
    has_term = PEM_TERM.search(sentence) is not None
    cues = [m.group(0) for m in PEM_REQUIRED.finditer(sentence)] if has_term else []
    if cues and all(PEM_WEAK_REQUIRED.match(c) for c in cues) and _pem_measured_near(sentence) \
            and not PEM_NOT_REQUIRED.search(sentence):
        return "measured"  # "eligible participants completed the DSQ, which assesses PEM"
    if has_term and cues:
        if PEM_NOT_REQUIRED.search(sentence):
            return "not_required"
        definitional = DEFINITIONAL_PRESENT.search(sentence)
        names_definition = re.search(r"\b(?:CCC|ICC|IOM|NICE|SEID|Canadian|International\s+Consensus|Institute\s+of"
                                     r"\s+Medicine|Fukuda|definitions?|criteria\s+(?:for\s+)?ME)\b", sentence)
        if definitional and names_definition and not re.search(r"\binclusion\s+criteri|\beligib", sentence, _I):
            return None  # "the ICC require PEM": a property of the definition, not of the study
        if re.search(r"\b(?:should|could|may|might|would)\s+(?:be\s+)?(?:required|mandatory)", sentence, _I):
            return None
        return "required"
    if has_term and PEM_WITH_ENROL.search(sentence):
        return "required"
    if PEM_MEASURE_ONLY.search(sentence) or (has_term and PEM_MEASURE.search(sentence)):
        return "measured"
    return None


def _quote_window(text: str, s_start: int, s_end: int, focus_start: int, focus_end: int) -> tuple[int, int]:
    """The sentence, or a window of it around the focus when the sentence is very long."""
    if s_end - s_start <= MAX_QUOTE:
        return s_start, s_end
    half = max(0, (MAX_QUOTE - (focus_end - focus_start)) // 2)
    start = max(s_start, focus_start - half)
    end = min(s_end, max(focus_end, start + MAX_QUOTE))
    while start > s_start and not text[start - 1].isspace():
        start += 1
        if start >= focus_start:
            start = focus_start
            break
    while end < s_end and not text[end].isspace() and end > focus_end:
        end -= 1
    return start, end


def extract_facts(paper: PaperText, extractor: Extractor | None = None) -> Facts:
    """One-off convenience; batch callers build one ``Extractor`` and reuse it."""
    return (extractor or Extractor()).extract(paper)
