"""plan_step: decode never starves, prefill always moves, image slices fit their budget."""

from __future__ import annotations

from vlmserve.engine.scheduler import PrefillNeed, plan_step, prefill_floor


def text(slot: int, n: int) -> PrefillNeed:
    return PrefillNeed(slot, text_run=n)


def image(slot: int, cells: int, ready: bool = True) -> PrefillNeed:
    return PrefillNeed(slot, image_cells=cells, image_ready=ready)


def test_every_generating_slot_decodes_and_prefill_gets_the_rest_in_slot_order():
    plan = plan_step([1, 0], [text(2, 1000), text(3, 5)], budget=64, image_budget=64)
    assert plan.decode == (0, 1)
    assert plan.prefill == ((2, 62),)
    assert len(plan.decode) + sum(n for _, n in plan.prefill) == 64


def test_short_prompts_share_the_budget_with_long_ones():
    plan = plan_step([0, 1], [text(3, 5), text(2, 1000)], budget=64, image_budget=64,
                     rotation=1)  # rotation 1 of [2, 3] starts at slot 3
    assert plan.prefill == ((3, 5), (2, 57))


def test_while_anyone_decodes_text_and_image_cells_share_the_slice():
    needs = [text(1, 1000), image(2, 576)]
    plan = plan_step([0], needs, budget=512, image_budget=64)
    assert plan.prefill == ((1, 64),) and plan.images == ()
    plan = plan_step([0], [text(1, 10), image(2, 576)], budget=512, image_budget=64)
    assert plan.prefill == ((1, 10),) and plan.images == ((2, 54),)
    # nobody decoding: the whole budget for text, a whole batch for images
    plan = plan_step([], needs, budget=512, image_budget=512)
    assert plan.prefill == ((1, 512),) and plan.images == ((2, 512),)


def test_all_slots_decode_even_past_the_budget_and_prefill_still_moves():
    decoding = list(range(10))
    plan = plan_step(decoding, [text(10, 100)], budget=4, image_budget=4)
    assert plan.decode == tuple(range(10))
    assert plan.prefill == ((10, prefill_floor(4)),) == ((10, 1),)


def test_rotation_alternates_between_long_prompts():
    needs = [text(0, 10_000), text(1, 10_000)]
    first = plan_step([], needs, budget=100, image_budget=64, rotation=0)
    second = plan_step([], needs, budget=100, image_budget=64, rotation=first.next_rotation)
    assert first.prefill == ((0, 100),) and second.prefill == ((1, 100),)


def test_ready_images_go_in_slices_within_the_image_budget():
    plan = plan_step([0], [image(1, 576), image(2, 10), text(3, 7)], budget=64,
                     image_budget=16)
    assert plan.images == ((1, 9),)  # 16 less the 7 text tokens beside them
    assert plan.prefill == ((3, 7),) and plan.decode == (0,)
    later = plan_step([0], [image(1, 5), image(2, 10)], budget=64, image_budget=16)
    assert later.images == ((1, 5), (2, 10))
    assert sum(n for _, n in later.images) == 15


def test_the_oldest_request_s_image_goes_first_whatever_the_rotation():
    needs = [PrefillNeed(1, image_cells=100, image_ready=True, arrival=2.0),
             PrefillNeed(2, image_cells=100, image_ready=True, arrival=1.0)]
    for rotation in (0, 1):
        plan = plan_step([0], needs, budget=64, image_budget=64, rotation=rotation)
        assert plan.images == ((2, 64),)


def test_images_still_encoding_are_skipped_without_holding_up_others():
    plan = plan_step([0], [image(1, 576, ready=False), text(2, 3)], budget=64,
                     image_budget=16)
    assert plan.images == () and plan.prefill == ((2, 3),) and plan.decode == (0,)
    assert plan_step([], [image(1, 576, ready=False)], budget=64, image_budget=16).empty
    assert plan_step([], [], budget=32, image_budget=16).empty
