"""The dashboard's Volumes page: size, the containers using each volume, remove, prune."""

from __future__ import annotations

from desktop.engine_model import VolumeRow, human_size
from desktop.ui import dialogs
from desktop.ui.button_row import button_row
from desktop.ui.controller import AppController
from desktop.ui.list_page import ListPage

COLUMNS = ("Name", "Driver", "Size", "In use by")


class VolumesPage(ListPage[VolumeRow]):
    """Volumes, re-read when the events stream reports a volume (or container) change."""

    KIND = "volume"
    COLUMNS = COLUMNS

    def __init__(self, controller: AppController) -> None:
        super().__init__(controller)
        buttons, (self.remove_button, self.prune_button) = button_row(
            ("Remove", self.remove_selected), ("Prune unused", self.prune))
        self.lay_out("Volumes", buttons)

    def list_rows(self) -> list[VolumeRow]:
        return self.controller.engine.volumes()

    def texts(self, row: VolumeRow) -> list[str]:
        return [row.name, row.driver, human_size(row.size) if row.size >= 0 else "—",   # the engine did not say
                ", ".join(row.used_by) or "unused"]

    def remove_selected(self) -> None:
        row = self.selected()
        if row is None:
            return
        if row.used_by:
            dialogs.show_error(self, "Volume in use", f"{row.name} is used by {', '.join(row.used_by)}. "
                                                      "Remove those containers first.")
            return
        self.confirm_remove(row.name, f"Remove {row.name} and the data in it?",
                            lambda: self.controller.engine.remove_volume(row.name))

    def prune(self) -> None:
        if dialogs.ask(self, "Prune volumes", "Remove every volume no container uses, with its data?",
                       ("Prune", "Cancel")) != "Prune":
            return
        self.run_prune(self.controller.engine.prune_volumes)
