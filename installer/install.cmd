@echo off
rem Installs lorelayd as a Windows service from this unpacked zip.
rem   install.cmd                  relay the running WSL 2 VM (--vm-id wsl)
rem   install.cmd LORELAYD-ARGS    e.g. --vm-id 1234abcd-... or
rem                                --guest tcp:192.0.2.10:50505 --token-file C:\ProgramData\lorelay\token
rem Run from an elevated prompt (it checks, and stops if not). Copies the
rem programs to %ProgramFiles%\lorelay,
rem the sample config to %ProgramData%\lorelay\lorelay.ini (kept if present),
rem registers the service (auto start, restart on failure) under the least
rem privileged account that its guest allows, and starts it.
rem Service account (docs/windows.md, "The service account"):
rem   --vm-id wsl (the default)    LocalSystem, as WSL's own service: the HCS
rem                                lookup needs an administrator, and the WSL
rem                                VM is reported to take hvsocket connections
rem                                only from SYSTEM and the user who started WSL
rem   --vm-id GUID, hvsock:        NT SERVICE\lorelayd in Hyper-V Administrators
rem   anything else (tcp:)         NT SERVICE\lorelayd
rem   set LORELAY_ACCOUNT=LocalSystem (or another account) before running
rem   install.cmd to override.
setlocal EnableExtensions
rem "net session" needs an administrator's token: without one every step
rem below would fail on its own, less clearly.
net session >nul 2>&1
if errorlevel 1 goto :fail_elevation
set "SRC=%~dp0"
set "DEST=%ProgramFiles%\lorelay"
set "DATA=%ProgramData%\lorelay"
set "SVC=lorelayd"
set "ARGS=%*"
if "%~1"=="" set "ARGS=--vm-id wsl"
rem Service id of the default hvsock port 50505 (0xC549) in the vsock template.
set "HVSVC=0000C549-FACB-11E6-BD58-64006A7986D3"
set "GCS=HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Virtualization\GuestCommunicationServices"

rem What the guest needs decides the account: wsl (--vm-id wsl), hyperv
rem (another --vm-id, or an hvsock: address) or plain. The arguments are
rem looked at one by one (for splits --vm-id=wsl too). No findstr, || or
rem && in this script: Wine's findstr ignores /c:, and Wine's cmd runs the
rem right side of || and && whatever the left side returned.
set "MODE=plain"
set "PREV="
for %%a in (%ARGS%) do call :classify "%%~a"
if /i "%MODE%"=="wsl" (set "ACCOUNT=LocalSystem") else (set "ACCOUNT=NT SERVICE\%SVC%")
if defined LORELAY_ACCOUNT set "ACCOUNT=%LORELAY_ACCOUNT%"

rem An earlier install: stop it so its exe can be replaced, then re-create.
sc.exe query %SVC% >nul 2>&1
if not errorlevel 1 (
  echo lorelay: stopping the installed service
  sc.exe stop %SVC% >nul 2>&1
  call :wait_stopped
  sc.exe delete %SVC% >nul
  if errorlevel 1 goto :fail_delete
)

if not exist "%DEST%" mkdir "%DEST%"
copy /y "%SRC%lorelayd.exe" "%DEST%\lorelayd.exe" >nul
if errorlevel 1 goto :fail_copy
if exist "%SRC%lorelayctl.exe" copy /y "%SRC%lorelayctl.exe" "%DEST%\lorelayctl.exe" >nul

rem %ProgramData%\lorelay: SYSTEM and Administrators only, nothing inherited
rem from ProgramData (which lets every user create files in subfolders).
rem /reset drops explicit ACEs an older directory may carry, /inheritance:r
rem then drops the inherited ones; files inside that only inherit follow.
rem The owner is set on the directory only: a file someone else planted
rem keeps its owner, and lorelayd refuses it (and says so) rather than this
rem script making it look trusted.
if not exist "%DATA%" mkdir "%DATA%"
set "ACL_OK=1"
icacls "%DATA%" /setowner *S-1-5-32-544 /q >nul 2>&1
if errorlevel 1 set "ACL_OK="
icacls "%DATA%" /reset /q >nul 2>&1
if errorlevel 1 set "ACL_OK="
icacls "%DATA%" /inheritance:r /grant:r *S-1-5-18:(OI)(CI)F *S-1-5-32-544:(OI)(CI)F /q >nul 2>&1
if errorlevel 1 set "ACL_OK="
if not defined ACL_OK echo lorelay: warning: could not restrict %DATA% to SYSTEM and Administrators ^(icacls failed^); lorelayd will refuse it while others may write it 1>&2
if not exist "%DATA%\lorelay.ini" copy "%SRC%lorelay.ini" "%DATA%\lorelay.ini" >nul

sc.exe create %SVC% binPath= "\"%DEST%\lorelayd.exe\" %ARGS%" start= auto DisplayName= "lorelay localhost relay"
if errorlevel 1 goto :fail_create
sc.exe description %SVC% "Forwards the localhost ports of a VM or WSL guest to this machine's loopback." >nul
sc.exe failure %SVC% reset= 86400 actions= restart/5000/restart/5000/restart/30000
if errorlevel 1 echo lorelay: warning: could not set the restart actions

rem The account, the service SID and the privileges. Each step may fail on
rem an sc.exe without it (Wine's has none of config, sidtype, privs): the
rem service then runs as LocalSystem with its full privileges, and says so.
if /i not "%ACCOUNT%"=="LocalSystem" (
  sc.exe config %SVC% obj= "%ACCOUNT%" >nul 2>&1
  if errorlevel 1 (
    echo lorelay: warning: sc.exe config obj= "%ACCOUNT%" failed: the service runs as LocalSystem 1>&2
    set "ACCOUNT=LocalSystem"
  )
)
rem A service SID of its own (NT SERVICE\lorelayd), in the token as an
rem ordinary group: "restricted" would make the token write-restricted,
rem which Winsock, the Event Log and HCS are not known to work with.
sc.exe sidtype %SVC% unrestricted >nul 2>&1
if errorlevel 1 echo lorelay: warning: sc.exe sidtype failed: the service has no SID of its own 1>&2
rem Only the privilege every process needs (directory traversal); the
rem pipe, sockets, hvsocket connects and the HCS query need none.
sc.exe privs %SVC% SeChangeNotifyPrivilege >nul 2>&1
if errorlevel 1 echo lorelay: warning: sc.exe privs failed: the service keeps every privilege of %ACCOUNT% 1>&2
if /i not "%ACCOUNT%"=="LocalSystem" (
  icacls "%DATA%" /grant "%ACCOUNT%:(OI)(CI)M" /q >nul 2>&1
  if errorlevel 1 echo lorelay: warning: could not let %ACCOUNT% write its log in %DATA% 1>&2
)
rem Hyper-V Administrators, S-1-5-32-578 (by SID: the name is localized),
rem may connect to the VMs' hvsockets. PowerShell 5.1+ has the cmdlet.
if /i "%MODE%"=="hyperv" if /i not "%ACCOUNT%"=="LocalSystem" (
  powershell.exe -NoProfile -NonInteractive -Command "try { Add-LocalGroupMember -SID S-1-5-32-578 -Member '%ACCOUNT%' -ErrorAction Stop } catch [Microsoft.PowerShell.Commands.MemberExistsException] { }" >nul 2>&1
  if errorlevel 1 echo lorelay: warning: could not add %ACCOUNT% to Hyper-V Administrators; hvsock connects may be refused 1>&2
)
rem hvsock guests: the default port's service id, registered as Hyper-V
rem sockets applications are (another port: register its id by hand).
if /i not "%MODE%"=="plain" (
  reg add "%GCS%\%HVSVC%" /v ElementName /t REG_SZ /d "lorelay (hvsock port 50505)" /f >nul 2>&1
  if errorlevel 1 echo lorelay: warning: could not register hvsock service %HVSVC% 1>&2
)
echo lorelay: service account %ACCOUNT% (guest kind: %MODE%)

rem Event Log source: lorelayd.exe carries its own message table.
reg add "HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application\%SVC%" /v EventMessageFile /t REG_EXPAND_SZ /d "%DEST%\lorelayd.exe" /f >nul
reg add "HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application\%SVC%" /v TypesSupported /t REG_DWORD /d 7 /f >nul

sc.exe start %SVC%
if errorlevel 1 goto :fail_start
echo lorelay: installed and started; log: %DATA%\lorelayd.log
echo lorelay: apply an edited %DATA%\lorelay.ini with: sc.exe control %SVC% paramchange
echo lorelay: lorelayctl is on PATH in this prompt: lorelayctl status; in another elevated prompt first run:
echo     set "PATH=%DEST%;%%PATH%%"
rem endlocal ends this script's variables; the set on the same line is
rem parsed before it, so PATH outlives it in the prompt that ran this.
endlocal & set "PATH=%DEST%;%PATH%"
exit /b 0

:classify
set "T=%~1"
if /i "%PREV%"=="--vm-id" (
  if /i "%T%"=="wsl" (set "MODE=wsl") else (set "MODE=hyperv")
)
if /i "%T:~0,7%"=="hvsock:" if /i not "%MODE%"=="wsl" set "MODE=hyperv"
set "PREV=%T%"
exit /b 0

:wait_stopped
for /l %%i in (1,1,15) do (
  sc.exe query %SVC% | find "STOPPED" >nul 2>&1
  if not errorlevel 1 exit /b 0
  ping -n 2 127.0.0.1 >nul 2>&1
)
exit /b 0

:fail_elevation
echo lorelay: install.cmd needs an elevated prompt: open Command Prompt with "Run as administrator" and run it again 1>&2
exit /b 1
:fail_delete
echo lorelay: could not remove the previous service (run as administrator?) 1>&2
exit /b 1
:fail_copy
echo lorelay: could not copy lorelayd.exe to %DEST% (run as administrator? service still running?) 1>&2
exit /b 1
:fail_create
echo lorelay: sc.exe create failed (run as administrator?) 1>&2
exit /b 1
:fail_start
echo lorelay: the service did not start; see %DATA%\lorelayd.log and the Application event log 1>&2
exit /b 1
