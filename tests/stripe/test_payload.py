"""Obj turns every miss in a Stripe payload into one PayloadError naming the field."""

from __future__ import annotations

import pytest

from bridge.stripe.payload import Obj, PayloadError


def invoice() -> Obj:
    data = {
        "id": "in_1",
        "amount_paid": 2000,
        "paid": True,
        "customer": {"id": "cus_1", "object": "customer", "email": "a@example.com"},
        "subscription": "sub_1",
        "lines": {"object": "list", "data": [{"id": "il_1"}, {"id": "il_2"}]},
        "charge": None,
    }
    return Obj.of(data, "data.object").named("invoice")


class TestObj:
    def test_named_uses_the_id(self) -> None:
        assert invoice().where == "invoice in_1"

    def test_missing_field_names_object_and_field(self) -> None:
        with pytest.raises(PayloadError, match=r"^invoice in_1: amount_due is missing$"):
            invoice().number("amount_due")

    def test_null_optional_field_is_none(self) -> None:
        assert invoice().ref("charge") is None
        assert invoice().opt_number("amount_due") is None

    def test_wrong_type_is_a_payload_error(self) -> None:
        with pytest.raises(PayloadError, match="amount_paid has the wrong type"):
            invoice().text("amount_paid")

    def test_a_bool_is_not_a_number(self) -> None:
        with pytest.raises(PayloadError, match="paid has the wrong type"):
            invoice().number("paid")

    def test_ref_reads_ids_and_expanded_objects(self) -> None:
        assert invoice().ref("subscription") == "sub_1"
        assert invoice().ref("customer") == "cus_1"

    def test_expanded_only_when_expanded(self) -> None:
        customer = invoice().expanded("customer")
        assert customer is not None and customer.opt_text("email") == "a@example.com"
        assert invoice().expanded("subscription") is None

    def test_items_of_a_list_and_of_nothing(self) -> None:
        assert [line.text("id") for line in invoice().items("lines")] == ["il_1", "il_2"]
        assert invoice().items("discounts") == []

    def test_items_name_their_position(self) -> None:
        second = invoice().items("lines")[1]
        with pytest.raises(PayloadError, match=r"lines\[1\]: period is missing"):
            second.obj("period")

    @pytest.mark.parametrize("value", [None, [], "x", 3])
    def test_not_an_object(self, value: object) -> None:
        with pytest.raises(PayloadError, match="event is not an object"):
            Obj.of(value, "event")
