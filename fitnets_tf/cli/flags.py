"""The experiment's absl flags, derived from :mod:`fitnets_tf.config`: one flag per option.

Nothing here names an option: a field added to a config section is a flag at once, with the
field's default (from `config.FLAG_DEFAULTS`), help text and limits.
"""

from __future__ import annotations

import re

from absl import flags

from fitnets_tf import config as config_lib
from fitnets_tf import options
from fitnets_tf.errors import ConfigError

FLAGS = flags.FLAGS


def all_specs():
    for section, section_type in config_lib.SECTIONS.items():
        for spec in options.specs(section_type):
            yield section, spec


def define_experiment_flags(defaults: config_lib.ExperimentConfig = config_lib.FLAG_DEFAULTS,
                            workdir: str = "runs/fashion_mnist", flag_values=FLAGS) -> None:  # fmt: skip
    """Defines one flag per option (defaults from ``defaults``) and ``--workdir``.

    Once per process: the tuner's CLI takes the experiment's flags too, and a process (the
    tests, a notebook) may import both CLIs.
    """
    if "workdir" in flag_values:
        return
    for section, spec in all_specs():
        define(spec, getattr(getattr(defaults, section), spec.name), flag_values)
    flags.DEFINE_string("workdir", workdir, "Run directory: everything is written here.",
                        flag_values=flag_values)  # fmt: skip


def define(spec: options.Spec, default, flag_values=FLAGS) -> None:
    """The absl flag of one option: its type, bounds and choices become absl's."""
    opt = spec.option
    kwargs = {"flag_values": flag_values}
    help_text = opt.help
    choices = opt.valid_choices()
    if spec.type is bool:
        flags.DEFINE_bool(spec.flag, default, help_text, **kwargs)
    elif spec.type is tuple:
        if choices:
            help_text += f" Any of {', '.join(choices)}."
        flags.DEFINE_list(spec.flag, None if default is None else [str(v) for v in default],
                          help_text, **kwargs)  # fmt: skip
    elif spec.type in (int, float):
        define_number = flags.DEFINE_integer if spec.type is int else flags.DEFINE_float
        define_number(spec.flag, default, help_text, lower_bound=opt.minimum,
                      upper_bound=opt.maximum, **kwargs)  # fmt: skip
        if opt.exclusive_minimum is not None:
            bound = opt.exclusive_minimum
            flags.register_validator(spec.flag, lambda v, b=bound: v is None or v > b,
                                     f"--{spec.flag} must be > {bound:g}.", flag_values)  # fmt: skip
    elif choices is not None and not callable(opt.choices):
        flags.DEFINE_enum(spec.flag, default, choices, help_text, **kwargs)
    else:
        # Registries (datasets, architectures) are checked by the config's validation, which
        # names the valid values; the help lists today's.
        if choices:
            help_text += f" One of: {', '.join(choices)}."
        flags.DEFINE_string(spec.flag, default, help_text, **kwargs)


def config_from_flags(f=FLAGS, base: config_lib.ExperimentConfig | None = None
                      ) -> config_lib.ExperimentConfig:  # fmt: skip
    """The flags as an :class:`~fitnets_tf.config.ExperimentConfig`: the only place they are read.

    With ``base``, a flag not given on the command line (or in a flagfile) takes ``base``'s
    value instead of its default.
    """
    values = {
        spec.name: options.coerce(spec, f[spec.flag].value)
        if base is None or f[spec.flag].present else getattr(getattr(base, section), spec.name)
        for section, spec in all_specs()
    }
    return config_lib.ExperimentConfig.from_values(values)


def without_flagfile(argv: list[str]) -> bool:
    """Whether a command line gives no flagfile (absl expands them before parsing).

    absl takes ``-flagfile`` as well as ``--flagfile``, each with ``=`` or the path as the next
    argument; a ``-flagfile=`` seen as no flagfile put the default experiment under the file's.
    """
    for arg in argv[1:]:
        if arg == "--":  # the flags end here
            break
        if arg.startswith("-") and arg.lstrip("-").split("=", 1)[0] == "flagfile":
            return False
    return True


def given_options(f=FLAGS) -> set[str]:
    """The options whose flags the command line (or its flagfile) gives."""
    return {spec.name for _, spec in all_specs() if f[spec.flag].present}


def config_from_command_line(argv: list[str], f=FLAGS) -> config_lib.ExperimentConfig:
    """The experiment a command line describes: its flagfile's; without one, the default
    experiment's (less what belongs to models it names, see ``config.default_for``) with the
    given flags applied."""
    base = config_lib.default_for(given_options(f)) if without_flagfile(argv) else None
    return config_from_flags(f, base)


def validated_command_line(argv: list[str], f=FLAGS) -> config_lib.ExperimentConfig:
    """:func:`config_from_command_line`, validated; a refusal without a flagfile names the
    values it took from the default experiment."""
    config = config_from_command_line(argv, f)
    try:
        config.validate()
    except ConfigError as e:
        if not without_flagfile(argv):
            raise
        base = config_lib.default_for(given_options(f))
        raise ConfigError(f"{e}{_from_the_default(str(e), base, given_options(f))}") from e
    return config


def _from_the_default(message: str, base, given: set[str]) -> str:
    """Which values a refused command line took from the default experiment, not from the user:
    ``--optimizer=adam`` alone meets the default's momentum and weight decay, which the user
    never typed and the message tells them to drop."""
    flag_defaults = config_lib.FLAG_DEFAULTS
    inherited = [options.serialize(spec, getattr(getattr(base, section), spec.name))
                 for section, spec in all_specs()
                 if spec.name not in given and _names(message, spec)
                 and getattr(getattr(base, section), spec.name)
                 != getattr(getattr(flag_defaults, section), spec.name)]  # fmt: skip
    if not inherited:
        return ""
    listed = ", ".join(inherited)
    return (f" ({listed}: the default experiment's. Without a --flagfile, the flags you do not "
            "give are the default experiment's: give these yourself, or start from a flagfile "
            "(one starts from every flag's own default; the repository's configs/ holds "
            "examples, such as configs/smoke.flags).)")  # fmt: skip


# Option names a message may use bare ("adam takes no momentum"). The other names without an
# underscore are words every message uses ("the teacher", "hints"): only "--teacher" names
# the option.
_BARE_TERMS = ("momentum", "nesterov", "rho", "epsilon")


def _names(message: str, spec) -> bool:
    """Whether ``message`` names the option ``spec``."""
    if re.search(rf"--{spec.flag}\b", message):
        return True
    bare = "_" in spec.name or spec.name in _BARE_TERMS
    return bare and re.search(rf"\b{spec.name}\b", message) is not None


def flagfile_lines(config: config_lib.ExperimentConfig, workdir) -> list[str]:
    """``config`` and ``workdir`` as flag lines: a flagfile that reproduces the run."""
    lines = [options.serialize(spec, getattr(getattr(config, section), spec.name))
             for section, spec in all_specs()]  # fmt: skip
    lines.append(f"--workdir={workdir}")
    return sorted(line for line in lines if line)


def resolved_flagfile(config: config_lib.ExperimentConfig, workdir) -> str:
    return "\n".join(flagfile_lines(config, workdir)) + "\n"
