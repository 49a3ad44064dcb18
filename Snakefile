# featreg: vision-encoder features as guidance in B-spline FFD registration.
# The default config runs the built-in synthetic cohort on a laptop CPU in minutes:
#   snakemake --cores 2
# The paper's grid on ACDC (GPU):
#   snakemake --configfile config/paper.yaml --cores 8 --resources gpu=1


from snakemake.utils import min_version

min_version("9.0")


# The default config, unless the command line names one (--configfile replaces it, not merged).
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/registration.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        f"{REPORTS}/report.html",
