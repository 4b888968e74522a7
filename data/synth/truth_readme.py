"""The README written into OUT/truth: what each truth file holds and what the registries leave out."""

TRUTH_README = """# Ground truth of the synthetic city

The pipeline never reads this folder. It holds the latent facts the synthetic city was generated from,
so that tags, recommendations and alerts can be measured against them. All dates are Asia/Shanghai,
the window is the two years before as_of (as_of itself excluded).

## Files
- `life_events.csv` (subject_id, code, date): life events of persons in the window.
  - `life_event.birth`: both parents (the household head and spouse) of a child born in the window, on
    the birth date. The registry has no relationship field: a child's parents are the adults of the
    household younger than about 55 (grandparents living with them are older). The newborn is a person in the export, in the parents' household, holding a
    `birth_medical_certificate` issued that day.
  - `life_event.second_child`: as birth, when the newborn has an older sibling in the household.
  - `life_event.school_entry`: the parents of a child who is 3, 6 or 12 by 1 September (kindergarten,
    primary, junior secondary school), dated that 1 September.
  - `life_event.graduation`: graduates (21-25 years old), dated 1 July.
  - `life_event.job_seeking`: most graduates (around graduation) and about 2% of 25-54 year-olds.
  - `life_event.home_purchase`: the household head, on the day the purchase started; about half
    completed it and hold a `property_certificate` issued 20-75 days later.
  - `life_event.marriage`: both spouses, on the wedding day; each holds a `marriage_certificate` issued
    that day and is `married` in the registry.
  - `life_event.retirement`: on the birthday reaching 60 (men), 55 (women in cadre jobs) or 50 (women in
    worker jobs).
  - `life_event.bereavement`: a widowed elderly person whose spouse died in the window (and the head of
    their household), plus adults who lost a parent living elsewhere.
- `crowds.csv` (subject_id, code) on as_of: `crowd.child` (<14), `crowd.elderly` (>=60), `crowd.hardship`
  (registry low_income), `crowd.disabled` (registry disability), `crowd.parent_young_child` (every adult
  of a household with a child under 6), `crowd.non_local` (no local hukou).
- `occupations.csv` (person_id, occupation): the true occupation on as_of of everyone who has one
  (bare codes: student, teacher, security_guard, medical_worker, driver, it_professional,
  self_employed, office_worker). Retired, unemployed and young children have none.
- `enterprise_traits.csv` (enterprise_id, code): `enterprise.new_business` (founded within 365 days),
  `enterprise.size_*` (micro <10, small <100, medium <1000, large), `enterprise.industry_X`,
  `enterprise.food_catering` (caterers and food retailers, holders of a food business licence),
  `enterprise.high_tech_candidate` (industry C/I/M, at least a year old, 10-1999 employees),
  `enterprise.annual_report_due` (only when as_of falls in 1 January - 30 June: founded before this
  year and not yet filed this year's report).

## What the registries deliberately leave out
- Occupation: the people registry holds it for only about a quarter of those who have one (teachers and
  medical workers somewhat more often); the rest must be inferred from behaviour (each occupation
  browses the catalogue items tagged with it) and attributes.
- Job seeking, graduation and home-purchase intent: behaviour only (episodes on the matching items);
  only completed purchases leave a property certificate.
- Bereavement: behaviour only (plus `widowed` marital status for the surviving spouse).
- Retirement of women: the registry has no job class, so 50 vs 55 is only visible in behaviour
  (retirement and pension items) or in a known occupation.
- Which enterprise filed its annual report is only visible in the event log (apply/complete of the
  annual-report items).

## How behaviour is generated
Persons under 14 have no events of their own (their parents act for them); their licences still renew.
Episodes (views, then possibly click, favorite, consult, apply, complete) on the items whose tag
columns match a subject's life events (around the event date), occupation, crowds, industry, size and
traits; renewal episodes ending on the day a licence was renewed (the new licence is in the export, the
old one expired), intent-only episodes for lapsed licences and for many licences expiring within 60
days after as_of; routine transactions on popular items; and Zipf popularity noise (browsing only) over
the items each subject is eligible for (age, hukou, own-district variants). Once-only items are applied
for and completed at most once per subject.
"""
