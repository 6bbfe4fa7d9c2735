"""What the duty room and the auditor rely on while a burst goes out through a Twilio that paces and reports back.

Each test runs the installed `jiaoying serve` on the 巫溪 sample against the paced fake Twilio (tests/fakes/twilio.py,
`Paced`) and counts at the provider's side: what reached Twilio, when, and what Twilio told us afterwards. The
duty officer acts over the JSON API; the SQLite file is read only to hold its rows against the audit and the fake.
Each failure says the number a user would read. See paced.py for the harness.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import pytest

from alerting.model.domain import DeliveryState, TargetState
from tests.alerting.deliver.paced import (
    BURST_UNITS,
    LIFT,
    ONE_TOWNSHIP,
    SENT_STATES,
    SMALL_VILLAGE,
    TWO_TOWNSHIPS,
    WARN,
    Row,
    lift_notices,
    make_sample,
    paced_county,
    taken,
    warnings,
)
from tests.fakes.twilio import (
    ANSWERED,
    BUSY,
    CALL_FAILED,
    DELIVERED,
    MACHINE,
    NO_ANSWER,
    SMS_FAILED,
    UNDELIVERED,
    Paced,
    Received,
)

pytestmark = pytest.mark.timeout(150)

SMS_PER_SECOND = 20.0  # JIAOYING_TWILIO_SMS_PER_SECOND: a 316-text burst takes about 16 s
# For the answers test: 316 texts take about 32 s, so fifty answers still land mid-burst when the other test worker
# loads this 2-core machine (each answer then took up to 200 ms, and at 20/s the burst was over before the fiftieth).
SLOW_SMS_PER_SECOND = 10.0
OFFICERS = 3  # duty officers answering on behalf at the same time
ON_THE_WIRE_S = 0.05  # a request already on its way when the duty officer's action returned
SMS_CONCURRENCY = 20  # channels/twilio/sms.py DEFAULT_LIMITS: at most this many texts in flight at once

# Twilio in a normal hour: a per-second limit well above our pacing, a little latency, delivery reports in order.
STEADY = Paced(messages_per_second=50, calls_per_second=50, latency_s=0.05, callbacks=("in_order",))


@pytest.fixture(scope="session")
def sample_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 巫溪 sample (seed 2024), loaded once by `jiaoying sample-data`; each test works on a copy."""
    return make_sample(tmp_path_factory.mktemp("paced-sample"))


def sms_warnings(rows: list[Row]) -> list[Row]:
    return [r for r in rows if r.channel == "sms" and r.purpose == WARN]


def names(items: list[str], limit: int = 5) -> str:
    return ", ".join(items[:limit]) + (f" … ({len(items)} in all)" if len(items) > limit else "")


# ---- a. answers in the middle of a burst ----------------------------------------------------------


async def test_an_answer_given_mid_burst_stops_that_person_s_texts_at_once(tmp_path: Path, sample_db: Path) -> None:
    """Three duty officers phone fifty grid workers during a 316-text burst and answer for each of them (代为确认).

    Once the answer has returned, that person's phone must not receive the warning any more (but for one request
    already on the wire), and their delivery row must say exactly what happened at Twilio: sent if Twilio got it,
    cancelled if it never did.
    """
    title = "五乡镇强降雨黄色预警（代为确认）"
    async with paced_county(tmp_path, sample_db, STEADY, sms_per_second=SLOW_SMS_PER_SECOND) as county:
        issued = await county.issue("yellow", title, BURST_UNITS)
        planned = issued.by_channel.get("sms", 0)
        assert planned >= 300, f"the burst plans {planned} SMS"
        phones = await county.phones(BURST_UNITS)
        await county.wait_for(lambda: len(warnings(county.twilio, title)) >= 60, 30, "60 warning SMS at Twilio")

        texted = {sms.to for sms in warnings(county.twilio, title)}
        recipients = await county.recipients(issued.id)
        not_yet = [r for r in recipients if r["person_id"] in phones and phones[r["person_id"]] not in texted]
        chosen = random.Random(7).sample(not_yet, 50)
        returned: dict[str, float] = {}
        at_first = len(warnings(county.twilio, title))
        for start in range(0, len(chosen), OFFICERS):
            group = chosen[start : start + OFFICERS]
            times = await asyncio.gather(*(county.answer_for(issued.id, r["target_id"]) for r in group))
            returned.update({r["person_id"]: at for r, at in zip(group, times, strict=True)})
        at_last = len(warnings(county.twilio, title))
        still_sending = len(warnings(county.twilio, title)) < planned - len(chosen)
        await county.wait_sent_out([issued.id], 60)

        by_phone: dict[str, list[Received]] = defaultdict(list)
        for sms in warnings(county.twilio, title):
            by_phone[sms.to].append(sms)
        late: list[tuple[str, float]] = []
        for person, at in returned.items():
            late += [(phones[person], sms.at - at) for sms in by_phone[phones[person]] if sms.at > at + ON_THE_WIRE_S]
        reached = {sms.delivery_id for sms in warnings(county.twilio, title)}
        disagree: list[str] = []
        theirs = [row for row in sms_warnings(county.rows(issued.id)) if row.person_id in returned]
        assert len(theirs) == len(returned), f"{len(theirs)} warning SMS rows for {len(returned)} answered-for people"
        for row in theirs:
            if row.id in reached and row.state not in SENT_STATES:
                disagree.append(f"{row.person_id} says {row.state} though Twilio got the text")
            elif row.id not in reached and row.state != DeliveryState.CANCELLED.value:
                disagree.append(f"{row.person_id} says {row.state} though Twilio never got the text")
        after = {r["person_id"]: r["state"] for r in await county.recipients(issued.id)}

    problems = []
    assert still_sending, "the burst was over before the answers were given: nothing was tested"
    if late:
        worst = max(delay for _, delay in late)
        problems.append(
            f"{len(late)} warning SMS reached the phones of {len({p for p, _ in late})} of the 50 answered-for "
            f"recipients after the answer had returned (the latest {worst:.1f} s after)"
        )
    if disagree:
        problems.append(f"{len(disagree)} answered-for recipients' SMS rows disagree with Twilio: {names(disagree)}")
    not_answered = [p for p in returned if after.get(p) != TargetState.ANSWERED_FOR.value]
    if not_answered:
        problems.append(f"{len(not_answered)} answered-for recipients do not show 代为确认: {names(not_answered)}")
    print(
        f"answers: 50 given while {at_first}..{at_last} of {planned} texts had reached Twilio; "
        f"{sum(1 for r in theirs if r.id in reached)} of theirs reached Twilio anyway, {len(late)} after the answer"
    )
    assert not problems, "\n".join(problems)


# ---- b. 解除 in the middle of a burst ------------------------------------------------------------


async def test_a_cancel_mid_burst_stops_the_warning_and_lifts_exactly_those_it_reached(
    tmp_path: Path, sample_db: Path
) -> None:
    """解除 while the warning is still going out to 316 grid workers.

    After the cancel has returned no more warning texts go out; every phone the warning reached is told it is
    lifted, no phone that never got the warning is; and what the duty room reads (the alert's delivery counts,
    the delivery rows) and what the auditor reads (delivery.sent in the audit) name exactly the texts Twilio got.
    """
    title = "五乡镇强降雨黄色预警（解除）"
    async with paced_county(tmp_path, sample_db, STEADY, sms_per_second=SMS_PER_SECOND) as county:
        issued = await county.issue("yellow", title, BURST_UNITS)
        planned = issued.by_channel.get("sms", 0)
        await county.wait_for(lambda: len(warnings(county.twilio, title)) >= 80, 30, "80 warning SMS at Twilio")
        lifted = await county.cancel(issued.id)
        await county.wait_sent_out([issued.id], 60)

        warned = warnings(county.twilio, title)
        lifts = [n for n in lift_notices(county.twilio) if title in n.text]
        rows = county.rows(issued.id)
        audit = await county.audit(issued.id)
        counts = (await county.deliveries(issued.id)).get("sms", {})

    assert lifted.lift_notices > 0 and len(warned) < planned, f"解除 after {len(warned)} of {planned}: nothing tested"
    problems = []
    late = [sms for sms in warned if sms.at > lifted.returned_at + ON_THE_WIRE_S]
    if late:
        problems.append(
            f"{len(late)} warning SMS reached phones after 解除 had returned "
            f"(the latest {max(s.at for s in late) - lifted.returned_at:.1f} s after; {planned} planned)"
        )
    warned_phones, lifted_phones = {s.to for s in warned}, {n.to for n in lifts}
    if warned_phones - lifted_phones:
        problems.append(
            f"{len(warned_phones - lifted_phones)} of the {len(warned_phones)} phones the warning reached "
            "never got the 解除 notice"
        )
    if lifted_phones - warned_phones:
        problems.append(f"{len(lifted_phones - warned_phones)} phones got a 解除 notice for a warning they never got")
    print(
        f"解除 after {sum(1 for s in warned if s.at <= lifted.returned_at)} of {planned} texts: "
        f"{len(warned)} warnings, {len(lifts)} 解除 notices reached Twilio; {len(late)} warnings after it returned"
    )
    doubled = [phone for phone, n in Counter(n.to for n in lifts).items() if n > 1]
    if doubled:
        problems.append(f"{len(doubled)} phones got the 解除 notice more than once")

    for purpose, at_twilio in ((WARN, warned), (LIFT, lifts)):
        fake_ids = {s.delivery_id for s in at_twilio}
        row_ids = {r.id for r in rows if r.channel == "sms" and r.purpose == purpose and r.state in SENT_STATES}
        audit_ids = {
            e["subject"]
            for e in audit
            if e["kind"] == "delivery.sent"
            and e["data"].get("channel") == "sms"
            and e["data"].get("purpose") == purpose
        }
        if row_ids != fake_ids:
            problems.append(
                f"{purpose} SMS: Twilio got {len(fake_ids)}, the delivery rows say {len(row_ids)} were sent "
                f"({len(fake_ids - row_ids)} got by Twilio but not recorded sent, {len(row_ids - fake_ids)} recorded "
                "but never got)"
            )
        if audit_ids != fake_ids:
            problems.append(
                f"{purpose} SMS: Twilio got {len(fake_ids)}, the audit has {len(audit_ids)} delivery.sent "
                f"({len(fake_ids - audit_ids)} missing from the audit, {len(audit_ids - fake_ids)} never got by Twilio)"
            )
    shown_sent = sum(n for state, n in counts.items() if state in SENT_STATES)
    if shown_sent != len(warned) + len(lifts):
        problems.append(
            f"the alert's SMS counts show {shown_sent} sent; Twilio got {len(warned)} warnings and {len(lifts)} "
            f"解除 notices ({counts})"
        )
    assert not problems, "\n".join(problems)


# ---- c. a crash mid-burst ------------------------------------------------------------------------


async def test_a_crash_mid_burst_loses_no_text_and_repeats_at_most_those_in_flight(
    tmp_path: Path, sample_db: Path
) -> None:
    """The engine's machine loses power (SIGKILL) a third of the way through a 316-text burst, and comes back.

    Every planned warning text reaches Twilio at least once, and no more recipients get the same warning twice
    than there can be texts in flight at once (the SMS channel's concurrency).
    """
    title = "五乡镇强降雨黄色预警（断电重启）"
    async with paced_county(tmp_path, sample_db, STEADY, sms_per_second=SMS_PER_SECOND) as county:
        issued = await county.issue("yellow", title, BURST_UNITS)
        planned = issued.by_channel.get("sms", 0)
        await county.wait_for(lambda: len(warnings(county.twilio, title)) >= 100, 30, "100 warning SMS at Twilio")
        await county.kill(signal.SIGKILL)
        at_kill = len(warnings(county.twilio, title))
        await county.start()
        await county.wait_sent_out([issued.id], 60)
        rows = sms_warnings(county.rows(issued.id))
        sent = warnings(county.twilio, title)

    assert at_kill < planned, f"killed after all {planned} were sent: nothing tested"
    problems = []
    if len(rows) != planned:
        problems.append(f"{planned} warning SMS were planned, the store holds {len(rows)}")
    times = Counter(sms.delivery_id for sms in sent)
    lost = [r for r in rows if r.id not in times]
    if lost:
        problems.append(f"{len(lost)} of {planned} planned warning SMS never reached Twilio after the restart")
    twice = {sms.to for sms in sent if times[sms.delivery_id] > 1}
    if len(twice) > SMS_CONCURRENCY:
        problems.append(
            f"{len(twice)} recipients got the same warning SMS twice across the crash (killed after {at_kill} "
            f"reached Twilio); at most {SMS_CONCURRENCY}, the texts in flight at once, may"
        )
    print(
        f"crash after {at_kill} of {planned} texts: {len(times)} distinct reached Twilio, {len(sent)} in all, "
        f"{len(twice)} recipients got one twice"
    )
    unfinished = Counter(r.state for r in rows if r.state not in SENT_STATES)
    if unfinished:
        problems.append(f"warning SMS rows did not end sent: {dict(unfinished)}")
    assert not problems, "\n".join(problems)


# ---- d. reports early, twice, out of order -------------------------------------------------------


def expected(create: Received) -> tuple[str, str | None]:
    """What a delivery must end as after Twilio's last report on it: (state, what its error must name)."""
    report = create.report
    assert report is not None
    if report.reached:
        return "delivered", None
    if create.resource == "Messages":
        return "failed", report.error_code
    return "failed", "machine" if report.status == "completed" else report.status


async def test_delivery_reports_early_twice_or_out_of_order_end_as_twilio_last_said(
    tmp_path: Path, sample_db: Path
) -> None:
    """An orange warning (a call and a text to each of 81 people) while Twilio's reports arrive as they do on a
    bad network: some before the create's 201 (before we can have recorded the send), some twice, some with a
    stale "sent"/"ringing" after the final word.

    When it is over every delivery shows Twilio's last meaningful report (delivered, or failed with the
    provider's reason): a stale report never downgrades one. The engine answers every genuine callback 2xx,
    and a replayed identical callback changes nothing.
    """
    world = Paced(
        messages_per_second=50,
        calls_per_second=50,
        latency_s=0.05,
        callbacks=("in_order", "early", "twice", "out_of_order"),
        callback_delay_s=0.15,
        sms_reports=((DELIVERED, 6), (UNDELIVERED, 2), (SMS_FAILED, 2)),
        call_reports=((ANSWERED, 5), (NO_ANSWER, 2), (BUSY, 1), (CALL_FAILED, 1), (MACHINE, 1)),
        seed=11,
    )
    title = "双阳乡山洪橙色预警（回执）"
    async with paced_county(tmp_path, sample_db, world, sms_per_second=SMS_PER_SECOND, calls_per_second=10) as county:
        issued = await county.issue("orange", title, ONE_TOWNSHIP, hazard="山洪")
        await county.wait_sent_out([issued.id], 60)
        rows = {r.id: r for r in county.rows(issued.id)}
        creates = [c for c in taken(county.twilio, "Messages") + taken(county.twilio, "Calls") if title in c.text]
        genuine = list(county.twilio.callbacks)
        audited = Counter(e["subject"] for e in await county.audit(issued.id))

        finals = [cb for cb in genuine if cb.final and not cb.replay]
        replays = [await county.twilio.replay(cb) for cb in finals]
        after = {r.id: r for r in county.rows(issued.id)}
        audited_after = Counter(e["subject"] for e in await county.audit(issued.id))

    modes = Counter(c.mode for c in creates)
    assert set(modes) == set(world.callbacks), f"not every way of reporting was played: {modes}"
    problems = []
    planned = sum(issued.by_channel.get(c, 0) for c in ("sms", "voice"))
    if len(creates) != planned:
        problems.append(f"{planned} texts and calls were planned, Twilio created {len(creates)}")
    wrong: dict[str, list[str]] = defaultdict(list)
    shows_last: set[str] = set()  # deliveries showing Twilio's last report before the replays
    for create in creates:
        assert create.delivery_id is not None and create.report is not None and create.mode is not None
        row = rows.get(create.delivery_id)
        state, reason = expected(create)
        if row is None or row.state != state or (reason is not None and reason not in (row.error or "")):
            shown = f"{row.state} ({row.error})" if row else "no row"
            wrong[create.mode].append(f"Twilio said {create.report.status}, the row says {shown}")
        else:
            shows_last.add(create.delivery_id)
    if wrong:
        total = sum(len(v) for v in wrong.values())
        per_mode = "; ".join(f"{mode}: {len(v)} (e.g. {v[0]})" for mode, v in sorted(wrong.items()))
        problems.append(f"{total} of {len(creates)} deliveries do not show Twilio's last report — {per_mode}")
    refused = Counter(cb.answered for cb in genuine if not 200 <= cb.answered < 300)
    if refused:
        problems.append(f"{sum(refused.values())} of {len(genuine)} genuine callbacks were not answered 2xx: {refused}")
    refused_replays = [cb for cb in replays if not 200 <= cb.answered < 300]
    if refused_replays:
        problems.append(f"{len(refused_replays)} replayed callbacks were not answered 2xx")
    # a replay may only ever repeat what is recorded: a delivery already showing the report must not move
    changed = [i for i in shows_last if after[i] != rows[i]]
    noted = sum((audited_after - audited)[i] for i in shows_last)
    if changed or noted:
        problems.append(
            f"replaying their final callback changed {len(changed)} of the {len(shows_last)} deliveries that "
            f"already showed it and added {noted} audit events about them"
        )
    late_fixed = sum(1 for i, r in rows.items() if i not in shows_last and after[i] != r)
    print(
        f"reports: {len(creates)} creates {dict(modes)}, {len(genuine)} callbacks, {len(shows_last)} showed the "
        f"last report; {len(replays)} replays; the replays moved {late_fixed} deliveries whose report had been lost"
    )
    assert not problems, "\n".join(problems)


# ---- e. priority across alerts -------------------------------------------------------------------

NEW_WAVE_S = 5.0  # a new red alert's first calls are dialled within this, whatever older work is queued
WATCH_S = 15.0


async def test_a_new_red_alert_s_calls_go_before_an_older_alert_s_queued_lift_calls(
    tmp_path: Path, sample_db: Path
) -> None:
    """At two calls a second, a cancelled red alert's 146 解除 calls are queued when a new red alert is issued to
    a village.

    The new alert's first-wave calls (4) are dialled within a few seconds, long before the older queue drains:
    a lift notice can wait, a new red warning cannot.
    """
    old_title, new_title = "两乡镇山洪红色预警（旧）", "和街社区山洪红色预警（新）"
    fast = replace(STEADY, calls_per_second=None)  # the old warning is dialled fast, to queue many lift calls
    async with paced_county(tmp_path, sample_db, fast, calls_per_second=50) as county:
        old = await county.issue("red", old_title, TWO_TOWNSHIPS, hazard="山洪")
        await county.wait_sent_out([old.id], 45)  # the old warning reached everyone (at 50 calls a second)
        await county.kill(signal.SIGTERM)
        county.calls_per_second = 2.0  # the account's real CPS from now on, at Twilio and in the engine
        county.twilio.paced = replace(STEADY, calls_per_second=4)
        await county.start()

        lifted = await county.cancel(old.id)
        await county.wait_for(lambda: len(lift_notices(county.twilio, "Calls")) >= 2, 15, "the 解除 calls started")
        new = await county.issue("red", new_title, (SMALL_VILLAGE,), hazard="山洪")
        wave = new.by_channel.get("voice", 0)
        await county.poll(lambda: len(warnings(county.twilio, new_title, "Calls")) >= wave, WATCH_S)
        new_calls = warnings(county.twilio, new_title, "Calls")
        lift_calls = lift_notices(county.twilio, "Calls")

    assert lifted.lift_notices >= 140, f"解除 queued {lifted.lift_notices} lift notices"
    assert wave == 4, f"the new alert plans {wave} calls"
    in_time = [c for c in new_calls if c.at - new.returned_at <= NEW_WAVE_S]
    last = max((c.at for c in new_calls), default=time.monotonic())
    lifts_first = sum(1 for c in lift_calls if new.returned_at < c.at < last)
    print(
        "priority: the new alert's calls reached Twilio "
        + ", ".join(f"{c.at - new.returned_at:.1f}" for c in new_calls)
        + f" s after issuing; {lifts_first} 解除 calls went in between, "
        f"{len(lift_calls)} of {lifted.lift_notices} by then"
    )
    assert len(in_time) == wave and len(lift_calls) < lifted.lift_notices, (
        f"{len(in_time)} of the new red alert's {wave} first-wave calls reached Twilio within {NEW_WAVE_S:.0f} s "
        f"({len(new_calls)} within {WATCH_S:.0f} s); meanwhile {lifts_first} of the old alert's "
        f"{lifted.lift_notices} 解除 calls went first, {len(lift_calls)} in all"
    )


# ---- f. a 429 storm ------------------------------------------------------------------------------

STORM_S = 10.0  # Twilio refuses 90 % of creates with 429 for this long
RECOVER_S = 40.0  # after the storm, everything has reached Twilio within this


async def test_a_429_storm_fails_no_warning_and_every_text_gets_through(tmp_path: Path, sample_db: Path) -> None:
    """Twilio answers 429 (20429, Retry-After: 1) to nine requests in ten for ten seconds, just as a 146-text
    warning starts.

    Being told to slow down is not a failure: no delivery ends failed because of throttling alone, and every
    text reaches Twilio once the storm has passed.
    """
    title = "两乡镇强降雨黄色预警（限流）"
    async with paced_county(tmp_path, sample_db, STEADY, sms_per_second=SMS_PER_SECOND) as county:
        county.twilio.throttle(STORM_S, share=0.9)
        storm_end = time.monotonic() + STORM_S
        issued = await county.issue("yellow", title, TWO_TOWNSHIPS)
        planned = issued.by_channel.get("sms", 0)

        def all_reached() -> bool:
            return len({s.delivery_id for s in warnings(county.twilio, title)}) >= planned

        within = storm_end + RECOVER_S - time.monotonic()
        reached_all = await county.poll(all_reached, within, step_s=0.2)
        reached_after = max((s.at for s in warnings(county.twilio, title)), default=storm_end) - storm_end
        in_storm = len({s.delivery_id for s in warnings(county.twilio, title) if s.at < storm_end})
        await county.wait_sent_out([issued.id], 30)
        rows = sms_warnings(county.rows(issued.id))
        refusals = sum(1 for r in county.twilio.received if r.status == 429)
        reached = {s.delivery_id for s in warnings(county.twilio, title)}

    assert refusals >= 10 and in_storm < planned, f"{refusals} refused, {in_storm} got through the storm: no storm"
    print(
        f"storm: {refusals} creates answered 429, {in_storm} texts got through during it, the last "
        f"{reached_after:.1f} s after it"
    )
    problems = []
    failed = [r for r in rows if r.state == DeliveryState.FAILED.value]
    if failed:
        problems.append(
            f"{len(failed)} of {planned} warning SMS ended failed after {refusals} 429 answers "
            f"(e.g. {failed[0].error}, {failed[0].attempts} attempts)"
        )
    if not reached_all:
        problems.append(
            f"{planned - len(reached & {r.id for r in rows})} of {planned} warning SMS had not reached Twilio "
            f"{RECOVER_S:.0f} s after the storm ended"
        )
    assert not problems, "\n".join(problems) + f"\n(the last text reached Twilio {reached_after:.1f} s after the storm)"
