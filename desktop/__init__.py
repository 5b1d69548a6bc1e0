"""Host side of Dockyard: machine manager, SSH link, host socket, CLI and (later) the tray UI."""
