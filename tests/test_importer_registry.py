"""The importer registry (usmtl.data.importers): one entry per source module, registered the
way model formats are; a name is never silently shadowed."""

import pytest

from usmtl.data import importers
from usmtl.data.importers import Importer, get, register, registered, unregister
from usmtl.errors import UsmtlError


def test_every_source_module_registers_its_importer():
    names = [importer.name for importer in registered()]
    assert names[:3] == ["busbra", "busi", "labelimg"]
    assert get("busbra").function is importers.import_busbra
    assert get("busi").function is importers.import_busi
    assert get("labelimg").function is importers.import_labelimg


def test_a_plugin_registers_and_a_taken_name_is_refused():
    def import_demo(root, out, log=print):
        return None

    plugin = register(Importer("demo_source", import_demo, "a test layout"))
    try:
        assert get("demo_source") is plugin and registered()[-1] is plugin
        with pytest.raises(UsmtlError, match=r"registered already.*Received: <usmtl importer 'busi'>"):
            register(Importer("busi", import_demo))
        assert get("busi").function is importers.import_busi  # not shadowed
    finally:
        assert unregister("demo_source") is plugin
    with pytest.raises(UsmtlError, match=r"Unknown importer; registered: busbra, busi, labelimg.*"
                                         r"Received: 'demo_source'"):
        get("demo_source")


def test_an_importer_needs_a_name_and_a_function():
    with pytest.raises(UsmtlError, match="Received: 'busbra'"):
        register("busbra")
    with pytest.raises(UsmtlError, match="with a name and a function"):
        register(Importer("", print))
