"""Ship the start-up hook (ag_torchfix.pth and its module) at the root of site-packages, for regular
and editable installs alike; pip records them, so ``pip uninstall`` removes them."""

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PLUGIN_FILES = {"plugin/ag_torchfix.pth": "ag_torchfix.pth", "plugin/_ag_torchfix_autoload.py": "_ag_torchfix_autoload.py"}


class PluginFilesHook(BuildHookInterface):
    def initialize(self, version, build_data):
        key = "force_include_editable" if version == "editable" else "force_include"
        build_data.setdefault(key, {}).update(PLUGIN_FILES)
