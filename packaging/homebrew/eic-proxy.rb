# Homebrew formula template for eic-proxy.
#
# Fill in for a release: the sdist URL and sha256 from PyPI, then generate the resource blocks of the
# Python dependencies with `brew update-python-resources eic-proxy` (boto3, botocore, cryptography,
# wsaccel, keyring, platformdirs and their dependencies).
class EicProxy < Formula
  include Language::Python::Virtualenv

  desc "OpenSSH ProxyCommand for private EC2 instances through EC2 Instance Connect Endpoints"
  homepage "https://github.com/OWNER/eic-proxy"
  url "https://files.pythonhosted.org/packages/source/e/eic-proxy/eic_proxy-VERSION.tar.gz"
  sha256 "SHA256_OF_THE_SDIST"
  license "Apache-2.0"

  depends_on "cryptography"
  depends_on "python@3.12"

  # resource "boto3" do ... end   <- `brew update-python-resources eic-proxy`

  def install
    virtualenv_install_with_resources
    generate_completions_from_executable(bin/"eic-proxy", "completion", shells: [:bash, :zsh])
  end

  def caveats
    <<~EOS
      Route hosts through eic-proxy (writes ~/.ssh/eic-proxy.config and one Include line):
        eic-proxy ssh-config --install 'i-*' 'web-*' --user ec2-user
      The generated ProxyCommand names eic-proxy by the path you ran it as (#{HOMEBREW_PREFIX}/bin/eic-proxy
      or #{opt_bin}/eic-proxy: links that `brew upgrade` keeps), never the versioned Cellar path.
      `eic-proxy doctor HOST` checks that every path in the installed block still exists.
    EOS
  end

  test do
    assert_match version.to_s, shell_output("#{bin}/eic-proxy --version")
    # The block names the stable opt/ link, not this version's Cellar path (an upgrade removes it).
    ENV["HOME"] = testpath
    system opt_bin/"eic-proxy", "ssh-config", "--install", "i-*", "--user", "ec2-user", "--ssh-version", "9.0"
    block = (testpath/".ssh/eic-proxy.config").read
    assert_match "ProxyCommand #{opt_bin}/eic-proxy connect", block
    refute_match "Cellar", block
    assert_match "Include #{testpath}/.ssh/eic-proxy.config", (testpath/".ssh/config").read
    assert_match "ec2-instance-connect:OpenTunnel", shell_output("#{bin}/eic-proxy policy --os-user ec2-user")
    assert_match "_eic_proxy", shell_output("#{bin}/eic-proxy completion bash")
  end
end
